// Command security is a short adversarial run against a live edge: a
// normal client sends chat requests at a steady rate, first alone, then
// while attackers send deeply nested 4 MiB bodies, floods of made-up
// model names and streams they never read. It reports how much the
// attack slowed the normal client, how many metric series the flood
// added, how many request slots the attack left held, and the errors.
//
//	go run ./scripts/bench/security [-quick] [-readme README.md]
//
// The edge and the mock provider run in this process, on loopback, so
// the run needs no build step; the attackers share the process and its
// two cores too, which makes the ratio a bound on the harm, not less.
// The last line of stdout is the summary:
//
//	security: normal_p99_ratio=<x> series_growth=<n> slots_leaked=<n> errors=<n>
//
// Every loop is bounded in count and time; nothing listens beyond
// 127.0.0.1.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/scripts/bench/loadgen"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

// Config is one run's plan.
type Config struct {
	// Rate is the normal client's send rate, in requests per second.
	Rate float64
	// Phase is how long the normal client is measured, alone and then
	// under attack.
	Phase time.Duration
	// NestedEvery is the pause between two nested bodies of one
	// attacker; NestedAttackers send them at once.
	NestedEvery     time.Duration
	NestedAttackers int
	// FloodRate is the rate of requests naming a model nobody has, in
	// requests per second; each name is new.
	FloodRate float64
	// SlowReaders is the number of streams opened and never read.
	SlowReaders int
	// WriteTimeout is the edge's stream_write_timeout.
	WriteTimeout time.Duration
	// Settle bounds the wait, after the attack, for the edge to free
	// what the attackers held.
	Settle time.Duration
	// Readme, if set, is the file whose bench:security section is
	// replaced with the results.
	Readme string
}

// DefaultConfig returns the full plan: about 25 seconds.
func DefaultConfig() Config {
	return Config{Rate: 200, Phase: 8 * time.Second, NestedEvery: 100 * time.Millisecond, NestedAttackers: 2,
		FloodRate: 500, SlowReaders: 16, WriteTimeout: time.Second, Settle: 10 * time.Second}
}

// QuickConfig returns a short plan, for checking that everything works.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Phase = 2 * time.Second
	c.SlowReaders = 8
	return c
}

func main() {
	quick := flag.Bool("quick", false, "short run to check that everything works")
	md := flag.String("readme", "", "replace the bench:security section of this markdown file with the results")
	slow := flag.Int("slow-readers", -1, "streams opened and never read (default: the plan's)")
	nestedAttackers := flag.Int("nested-attackers", -1, "attackers sending nested bodies (default: the plan's)")
	flood := flag.Float64("flood-rate", -1, "made-up model names per second (default: the plan's)")
	flag.Parse()
	cfg := DefaultConfig()
	if *quick {
		cfg = QuickConfig()
	}
	cfg.Readme = *md
	if *slow >= 0 {
		cfg.SlowReaders = *slow
	}
	if *nestedAttackers >= 0 {
		cfg.NestedAttackers = *nestedAttackers
	}
	if *flood >= 0 {
		cfg.FloodRate = *flood
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "security:", err)
		stop()
		os.Exit(1)
	}
}

// edge is the edge under attack and what the attackers need of it.
type edge struct {
	url  string
	addr string
	hc   *http.Client
}

func run(ctx context.Context, cfg Config, stdout, logw io.Writer) error {
	mcfg := providermock.DefaultConfig()
	mock, err := providermock.New(mcfg)
	if err != nil {
		return err
	}
	base, err := mock.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer mock.Close()

	ec := config.DefaultConfig()
	ec.NodeID, ec.Listen, ec.Auth = "security-bench", "127.0.0.1:0", config.AuthNone
	ec.StreamWriteTimeout = cfg.WriteTimeout
	ec.Table = table.Table{
		Providers: []table.Provider{{ID: "mock", Kind: table.KindOpenAI, BaseURL: base + "/v1"}},
		Models:    []table.Model{{ID: "gpt-4o-mini"}},
		Routes:    []*table.Route{{Model: "gpt-4o-mini", Targets: []table.Target{{Provider: "mock"}}}},
	}
	n, err := node.New(ec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	if err := n.Listen(); err != nil {
		return err
	}
	nctx, stopEdge := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- n.Run(nctx) }()
	defer func() {
		stopEdge()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
		}
	}()
	e := &edge{url: "http://" + n.Addr().String(), addr: n.Addr().String(),
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}}
	if err := e.waitReady(ctx, 20*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(logw, "security: edge ready at %s\n", e.url)

	// One of each refused request first, so the series they create
	// (status 400 and 404, model "unknown") exist before the count.
	if st, _ := e.post(ctx, nestedBody(1<<20), ""); st != http.StatusBadRequest {
		return fmt.Errorf("a nested body got %d, want 400", st)
	}
	if st, _ := e.post(ctx, chat("no-such-model-warmup", ""), ""); st != http.StatusNotFound {
		return fmt.Errorf("an unknown model got %d, want 404", st)
	}
	// And one stalled stream, cut, for the series of a cut stream.
	if c, err := e.stall(); err == nil {
		if err := e.settle(ctx, cfg.Settle); err != nil {
			c.Close()
			return fmt.Errorf("warm-up stalled stream: %w", err)
		}
		c.Close()
	}
	normal := loadgen.Target{URL: e.url + "/v1/chat/completions", Body: []byte(chat("gpt-4o-mini", ""))}
	lg := loadgen.NewClient(256)
	open := loadgen.OpenLoop{Rate: cfg.Rate, Duration: cfg.Phase, Timeout: 10 * time.Second}
	// Warm the path, then measure the normal client alone.
	if _, err := lg.Open(ctx, normal, loadgen.OpenLoop{Rate: cfg.Rate, Duration: time.Second}); err != nil {
		return err
	}
	seriesBefore, err := e.series(ctx)
	if err != nil {
		return err
	}
	quiet, err := lg.Open(ctx, normal, open)
	if err != nil {
		return err
	}
	fmt.Fprintf(logw, "security: alone: %d ok, %d errors, p50 %v p99 %v\n", quiet.OK, quiet.Errors, quiet.P50(), quiet.P99())

	actx, stopAttack := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var attackErrors, nestedSent, floodSent atomic.Int64
	var firstErr atomic.Value
	note := func(err error) {
		attackErrors.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	deep := nestedBody(4 << 20)
	for range cfg.NestedAttackers {
		wg.Go(func() {
			for actx.Err() == nil {
				st, err := e.post(actx, deep, "")
				switch {
				case actx.Err() != nil:
					return
				case err != nil:
					note(err)
				case st != http.StatusBadRequest:
					note(fmt.Errorf("nested body: status %d, want 400", st))
				}
				nestedSent.Add(1)
				sleep(actx, cfg.NestedEvery)
			}
		})
	}
	wg.Go(func() {
		if cfg.FloodRate <= 0 {
			return
		}
		every := time.Duration(float64(time.Second) / cfg.FloodRate)
		for i := 0; actx.Err() == nil; i++ {
			st, err := e.post(actx, chat("made-up-model-"+strconv.Itoa(i), ""), "")
			switch {
			case actx.Err() != nil:
				return
			case err != nil:
				note(err)
			case st != http.StatusNotFound:
				note(fmt.Errorf("made-up model: status %d, want 404", st))
			}
			floodSent.Add(1)
			sleep(actx, every)
		}
	})
	readers := make([]net.Conn, 0, cfg.SlowReaders)
	for range cfg.SlowReaders {
		c, err := e.stall()
		if err != nil {
			note(err)
			continue
		}
		readers = append(readers, c)
	}
	under, err := lg.Open(ctx, normal, open)
	stopAttack()
	wg.Wait()
	if err != nil {
		return err
	}
	fmt.Fprintf(logw, "security: under attack: %d ok, %d errors, p50 %v p99 %v; %d nested bodies, %d made-up models, %d stalled streams\n",
		under.OK, under.Errors, under.P50(), under.P99(), nestedSent.Load(), floodSent.Load(), len(readers))

	// Every stalled stream must be cut by the write deadline and give
	// back its slot, while its connection is still open and unread.
	leaked, _ := e.inFlight(ctx, cfg.Settle)
	for _, c := range readers {
		c.Close()
	}
	seriesAfter, err := e.series(ctx)
	if err != nil {
		return err
	}
	errs := int64(quiet.Errors+under.Errors+quiet.Unsent+under.Unsent) + attackErrors.Load()
	if s, ok := firstErr.Load().(string); ok {
		fmt.Fprintf(logw, "security: first attack error: %s\n", s)
	}
	if under.FirstError != "" {
		fmt.Fprintf(logw, "security: first normal error: %s\n", under.FirstError)
	}
	ratio := 0.0
	if quiet.P99() > 0 {
		ratio = float64(under.P99()) / float64(quiet.P99())
	}
	report := fmt.Sprintf(`Normal client at %.0f req/s for %v alone, then %v under attack: %d attackers each sending a 4 MiB body of nested arrays every %v (%d sent), a flood of made-up model names at up to %.0f req/s (%d sent), and %d streams that are never read (stream_write_timeout %v). Edge and attackers share one process and two cores.

| | alone | under attack |
|---|---|---|
| normal p50 | %v | %v |
| normal p99 | %v | %v |
| normal errors | %d | %d |

Metric series added by the flood: %d. Request slots still held %v after the attack: %d.
`, cfg.Rate, cfg.Phase, cfg.Phase, cfg.NestedAttackers, cfg.NestedEvery, nestedSent.Load(), cfg.FloodRate, floodSent.Load(),
		len(readers), cfg.WriteTimeout, quiet.P50().Round(time.Microsecond), under.P50().Round(time.Microsecond),
		quiet.P99().Round(time.Microsecond), under.P99().Round(time.Microsecond), quiet.Errors, under.Errors,
		seriesAfter-seriesBefore, cfg.Settle, leaked)
	summary := fmt.Sprintf("security: normal_p99_ratio=%.2f series_growth=%d slots_leaked=%d errors=%d", ratio, seriesAfter-seriesBefore, leaked, errs)
	if cfg.Readme != "" {
		if err := readme.Replace(cfg.Readme, "security", report+"\n`"+summary+"`\n"); err != nil {
			return err
		}
	}
	fmt.Fprint(stdout, report)
	fmt.Fprintln(stdout, summary)
	return nil
}

func chat(model, extra string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]` + extra + `}`
}

// nestedBody is a chat request of about size bytes whose content is
// arrays nested as deep as they fit.
func nestedBody(size int) string {
	head, tail := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":`, `}]}`
	depth := (size - len(head) - len(tail)) / 2
	return head + strings.Repeat("[", depth) + strings.Repeat("]", depth) + tail
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (e *edge) post(ctx context.Context, body, hdr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// stall opens a stream of an answer far longer than socket buffers hold
// and never reads it. The edge must cut it after its write timeout.
func (e *edge) stall() (net.Conn, error) {
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	body := chat("gpt-4o-mini", `,"stream":true`)
	body = strings.Replace(body, `"content":"hi"`, `"content":"hi #mock chunks=1000000 chunk_delay_ms=1"`, 1)
	_, err = fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (e *edge) waitReady(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := e.hc.Get(e.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("edge not ready")
		}
		sleep(ctx, 20*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// scrape calls fn with each sample line of /metrics.
func (e *edge) scrape(ctx context.Context, fn func(line string)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" && l[0] != '#' {
			fn(l)
		}
	}
	return sc.Err()
}

// series counts the meridian_ sample lines.
func (e *edge) series(ctx context.Context) (int, error) {
	n := 0
	err := e.scrape(ctx, func(l string) {
		if strings.HasPrefix(l, "meridian_") {
			n++
		}
	})
	return n, err
}

// gauge reads one unlabelled gauge.
func (e *edge) gauge(ctx context.Context, name string) (int64, error) {
	v := int64(-1)
	err := e.scrape(ctx, func(l string) {
		if rest, ok := strings.CutPrefix(l, name+" "); ok {
			f, _ := strconv.ParseFloat(rest, 64)
			v = int64(f)
		}
	})
	if err == nil && v < 0 {
		err = fmt.Errorf("/metrics has no %s", name)
	}
	return v, err
}

// inFlight waits up to within for the edge to serve no request, and
// returns how many it still serves then (-1 if it could not tell).
func (e *edge) inFlight(ctx context.Context, within time.Duration) (int64, error) {
	n := int64(-1)
	deadline := time.Now().Add(within)
	for {
		in, err := e.gauge(ctx, "meridian_requests_in_flight")
		if err == nil {
			n = in
		}
		if n == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return n, err
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

// settle waits for the edge to serve no request.
func (e *edge) settle(ctx context.Context, within time.Duration) error {
	if n, err := e.inFlight(ctx, within); n != 0 {
		return fmt.Errorf("%d requests still in flight after %v (%v)", n, within, err)
	}
	return nil
}
