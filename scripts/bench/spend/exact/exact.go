// Package exact proves that spend is exact across the mesh: clients send
// a mix of requests (both API surfaces, streamed and not, provider,
// local and peer targets) through every edge of a running mesh under one
// fresh tenant and key, one edge is SIGKILLed and restarted midway, and
// the control plane's usage totals for that tenant must then equal, to
// the nano-dollar, what the clients computed from the answers they were
// served: the same number of requests, the same tokens, the same cost.
//
// Clients price each answer themselves, from the usage in the answer,
// the target in x-meridian-route, the routes and the prices the control
// plane holds, with the same integer rule the edges use
// (usagewire.CostNanoUSD).
//
// Traffic pauses around the kill, so that no request is in flight on the
// victim when it dies: a request cut by a crash is one its client cannot
// price either. The kill comes the moment traffic paused, inside the
// edge's 10 ms spool flush: what it tests is that the records of the
// last requests (still in the edge's memory-mapped journal, not yet
// spooled) and those spooled but not yet delivered all come back when
// the victim restarts.
//
// scripts/e2e runs a bounded form; make bench-spend the full one.
package exact

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/scripts/devmesh/mesh"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// Options shape a run.
type Options struct {
	// Requests is how many requests the clients send in all.
	Requests int
	// Workers send concurrently, each to the edges in turn.
	Workers int
	// Models are asked in turn; each must be priced or free (local).
	Models []string
	// Victim is the edge SIGKILLed and restarted after half the
	// requests, by node ID; empty kills none.
	Victim string
	// Settle bounds the wait for the control plane's totals.
	Settle time.Duration
	// Log, when set, gets progress lines.
	Log io.Writer
}

// Result is what the clients were served and what the control plane
// counted.
type Result struct {
	Requests      int   // requests that got an answer (any status)
	Unanswered    int   // requests that got none (transport errors)
	Forwarded     int   // answered by a peer over a link
	Records       int64 // requests the control plane counted for the tenant
	ClientNano    int64 // cost the clients computed
	ControlNano   int64 // cost the control plane totals
	ClientTokens  [2]uint64
	ControlTokens [2]uint64
	ByTarget      map[string]int
	Elapsed       time.Duration
	// FirstError is the first transport error a client met, if any.
	FirstError string
}

// DiffCents is the cost difference, rounded to cents.
func (r Result) DiffCents() int64 {
	d := r.ControlNano - r.ClientNano
	return int64(math.Round(float64(d) / 1e7))
}

// Lost and Dup count records missing or extra against the requests.
func (r Result) Lost() int64 { return max(0, int64(r.Requests)-r.Records) }
func (r Result) Dup() int64  { return max(0, r.Records-int64(r.Requests)) }

// Exact says whether the totals match the clients' exactly.
func (r Result) Exact() bool {
	return r.Records == int64(r.Requests) && r.ControlNano == r.ClientNano && r.ControlTokens == r.ClientTokens && r.Unanswered == 0
}

// Line is the benchmark's closing line.
func (r Result) Line() string {
	return fmt.Sprintf("spend: requests=%d records=%d diff_cents=%d lost=%d dup=%d", r.Requests, r.Records, r.DiffCents(), r.Lost(), r.Dup())
}

func (r Result) String() string {
	return fmt.Sprintf("%d requests (%d forwarded over links, targets %v), %d unanswered; control plane: %d records, $%s vs the clients' $%s, tokens %v vs %v",
		r.Requests, r.Forwarded, r.ByTarget, r.Unanswered, r.Records, usd(r.ControlNano), usd(r.ClientNano), r.ControlTokens, r.ClientTokens)
}

func usd(nano int64) string { return fmt.Sprintf("%d.%09d", nano/1e9, nano%1e9) }

// Run runs the check on m.
func Run(ctx context.Context, m *mesh.Mesh, o Options) (Result, error) {
	if o.Workers <= 0 {
		o.Workers = 6
	}
	if o.Settle <= 0 {
		o.Settle = time.Minute
	}
	if len(o.Models) == 0 {
		o.Models = []string{"gpt-4o-mini", "claude-sonnet", "gemini-flash", "tiny", "tiny-repeat"}
	}
	c := &checker{m: m, o: o, hc: &http.Client{Timeout: 60 * time.Second}, byTarget: map[string]int{}}
	start := time.Now()
	if err := c.setup(ctx); err != nil {
		return Result{}, err
	}
	half := o.Requests / 2
	if err := c.send(ctx, 0, half); err != nil {
		return c.result(start), err
	}
	if o.Victim != "" {
		if err := c.kill(ctx); err != nil {
			return c.result(start), err
		}
	}
	if err := c.send(ctx, half, o.Requests); err != nil {
		return c.result(start), err
	}
	err := c.settle(ctx)
	return c.result(start), err
}

type checker struct {
	m      *mesh.Mesh
	o      Options
	hc     *http.Client
	tenant string
	key    string
	prices map[[2]string]table.Price // (provider, upstream model)
	routes map[string]map[string]string

	mu         sync.Mutex
	requests   int
	unanswered int
	forwarded  int
	nano       int64
	tokens     [2]uint64
	byTarget   map[string]int
	firstErr   error
	control    usageRow
}

// setup creates the run's tenant and key through the control API, reads
// prices and routes, and waits until every edge accepts the key.
func (c *checker) setup(ctx context.Context) error {
	var b [8]byte
	rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	c.tenant = "spend-" + suffix[:8]
	c.key = "sk-spend-" + suffix
	sum := sha256.Sum256([]byte(c.key))
	if err := c.api(ctx, http.MethodPost, "/v1/control/tenants", map[string]any{"id": c.tenant}, nil); err != nil {
		return err
	}
	if err := c.api(ctx, http.MethodPost, "/v1/control/keys", map[string]any{"id": "key-" + c.tenant, "tenant": c.tenant, "hash": "sha256:" + hex.EncodeToString(sum[:])}, nil); err != nil {
		return err
	}
	var prices []struct {
		Model, Provider string
		Input, Output   float64
	}
	if err := c.api(ctx, http.MethodGet, "/v1/control/prices", nil, &prices); err != nil {
		return err
	}
	c.prices = map[[2]string]table.Price{}
	for _, p := range prices {
		c.prices[[2]string{p.Provider, p.Model}] = table.Price{Provider: p.Provider, Model: p.Model, Input: p.Input, Output: p.Output}
	}
	var routes []struct {
		Model   string
		Targets []struct{ Provider, Model string }
	}
	if err := c.api(ctx, http.MethodGet, "/v1/control/routes", nil, &routes); err != nil {
		return err
	}
	c.routes = map[string]map[string]string{}
	for _, r := range routes {
		up := map[string]string{}
		for _, t := range r.Targets {
			up[t.Provider] = t.Model
		}
		c.routes[r.Model] = up
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, e := range c.m.Edges {
		for {
			a, err := c.post(ctx, e, "/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":1,"messages":[{"role":"user","content":"warm up"}]}`, nil)
			if err == nil && a.status == http.StatusOK {
				c.count(a, "gpt-4o-mini", false) // it is served and billed like any other
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s never accepted the new key: %v %v", e.ID, a.status, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (c *checker) api(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	// Any control node answers (writes go to the leader); the first
	// that does is asked.
	var resp *http.Response
	var err error
	for _, base := range strings.Split(c.m.ControlURL(), ",") {
		var req *http.Request
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err = http.NewRequestWithContext(ctx, method, base+path, rd)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+mesh.AdminToken)
		req.Header.Set("Content-Type", "application/json")
		if resp, err = c.hc.Do(req); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// send sends requests [from, to) with o.Workers workers.
func (c *checker) send(ctx context.Context, from, to int) error {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	for range c.o.Workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				c.one(ctx, i)
			}
		})
	}
	wg.Wait()
	if c.o.Log != nil {
		fmt.Fprintf(c.o.Log, "spend: %d requests sent\n", to)
	}
	return ctx.Err()
}

// one sends request i: edge, model, surface and streaming all vary with i.
func (c *checker) one(ctx context.Context, i int) {
	e := c.m.Edges[i%len(c.m.Edges)]
	model := c.o.Models[(i/len(c.m.Edges))%len(c.o.Models)]
	stream := (i/7)%2 == 1
	anthropic := i%5 == 4
	var path, body string
	var hdr []string
	if anthropic {
		path = "/v1/messages"
		body = fmt.Sprintf(`{"model":%q,"max_tokens":%d,"stream":%t,"messages":[{"role":"user","content":"request %d"}]}`, model, 4+i%9, stream, i)
		hdr = []string{"anthropic-version", "2023-06-01"}
	} else {
		path = "/v1/chat/completions"
		opts := ""
		if stream {
			opts = `,"stream_options":{"include_usage":true}`
		}
		body = fmt.Sprintf(`{"model":%q,"max_tokens":%d,"stream":%t%s,"messages":[{"role":"user","content":"request %d"}]}`, model, 4+i%9, stream, opts, i)
	}
	a, err := c.post(ctx, e, path, body, hdr)
	if err != nil {
		c.mu.Lock()
		c.unanswered++
		if c.firstErr == nil {
			c.firstErr = err
		}
		c.mu.Unlock()
		return
	}
	c.count(a, model, anthropic)
}

type answer struct {
	status int
	route  string
	body   []byte
	stream bool
}

func (c *checker) post(ctx context.Context, e *mesh.Edge, path, body string, hdr []string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+path, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, route: resp.Header.Get("X-Meridian-Route"),
		body: b, stream: strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")}, nil
}

// count adds one answered request to the clients' books.
func (c *checker) count(a answer, model string, anthropic bool) {
	in, out := usageOf(a, anthropic)
	target := mesh.RouteField(a.route, "target")
	cost := int64(0)
	if provider, ok := strings.CutPrefix(target, "provider/"); ok && a.status == http.StatusOK {
		up := model
		if m := c.routes[model][provider]; m != "" {
			up = m
		}
		// As table.Compiled.PriceFor: by model ID, else upstream name.
		p, ok := c.prices[[2]string{provider, model}]
		if !ok {
			p = c.prices[[2]string{provider, up}]
		}
		cost = usagewire.CostNanoUSD(in, out, p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	c.nano += cost
	c.tokens[0] += in
	c.tokens[1] += out
	c.byTarget[target]++
	if strings.HasPrefix(target, "peer/") {
		c.forwarded++
	}
}

// usageOf reads the tokens an answer reports: the usage object of a
// plain answer, the usage chunk of an OpenAI stream (include_usage), or
// message_start's input and message_delta's output of an Anthropic one.
func usageOf(a answer, anthropic bool) (in, out uint64) {
	type usage struct {
		PromptTokens     uint64 `json:"prompt_tokens"`
		CompletionTokens uint64 `json:"completion_tokens"`
		InputTokens      uint64 `json:"input_tokens"`
		OutputTokens     uint64 `json:"output_tokens"`
	}
	type event struct {
		Usage   *usage `json:"usage"`
		Message *struct {
			Usage *usage `json:"usage"`
		} `json:"message"`
	}
	add := func(ev event) {
		for _, u := range []*usage{ev.Usage, func() *usage {
			if ev.Message != nil {
				return ev.Message.Usage
			}
			return nil
		}()} {
			if u == nil {
				continue
			}
			if anthropic {
				in, out = max(in, u.InputTokens), max(out, u.OutputTokens)
			} else {
				in, out = u.PromptTokens, u.CompletionTokens
			}
		}
	}
	if a.status != http.StatusOK {
		return 0, 0
	}
	if !a.stream {
		var ev event
		if json.Unmarshal(a.body, &ev) == nil {
			add(ev)
		}
		return in, out
	}
	sc := bufio.NewScanner(bytes.NewReader(a.body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var ev event
		if json.Unmarshal([]byte(data), &ev) == nil {
			add(ev)
		}
	}
	return in, out
}

// kill SIGKILLs the victim the moment traffic paused, so that its last
// records are likely still undelivered, and restarts it.
func (c *checker) kill(ctx context.Context) error {
	var victim *mesh.Edge
	for _, e := range c.m.Edges {
		if e.ID == c.o.Victim {
			victim = e
		}
	}
	if victim == nil {
		return fmt.Errorf("no edge %q", c.o.Victim)
	}
	before := map[string][]string{}
	for _, e := range c.m.Edges {
		for _, model := range c.o.Models {
			p, err := e.Planned(model)
			if err != nil {
				return err
			}
			before[e.ID+"/"+model] = p
		}
	}
	// No wait: the last answers' records are in the victim's journal,
	// not its spool, when it dies (edge/usage's package comment).
	victim.Kill()
	if c.o.Log != nil {
		fmt.Fprintf(c.o.Log, "spend: %s SIGKILLed; restarting it\n", victim.ID)
	}
	if err := c.m.Restart(ctx, victim); err != nil {
		return err
	}
	// Every edge plans again every target it planned before the kill
	// (the victim's copies back in gossip) before traffic resumes.
	deadline := time.Now().Add(30 * time.Second)
	for _, e := range c.m.Edges {
		for _, model := range c.o.Models {
			for {
				p, err := e.Planned(model)
				missing := ""
				for _, t := range before[e.ID+"/"+model] {
					if !slices.Contains(p, t) {
						missing = t
					}
				}
				if err == nil && len(p) > 0 && missing == "" {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("after the restart %s plans %v for %s, not %s as before (%v)", e.ID, p, model, missing, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return nil
}

type usageRow struct {
	Requests    int64  `json:"requests"`
	TokensIn    uint64 `json:"tokens_in"`
	TokensOut   uint64 `json:"tokens_out"`
	CostNanoUSD int64  `json:"cost_nano_usd"`
}

// settle waits until the control plane's totals for the tenant stop
// short of nothing: as many requests as the clients were answered, or
// o.Settle passes. Then it reads them once more after a pause, so that
// a late duplicate would show.
func (c *checker) settle(ctx context.Context) error {
	read := func() (usageRow, error) {
		var out struct {
			Rows []usageRow `json:"rows"`
		}
		err := c.api(ctx, http.MethodGet, "/v1/control/usage?tenant="+c.tenant, nil, &out)
		var r usageRow
		for _, row := range out.Rows {
			r.Requests += row.Requests
			r.TokensIn += row.TokensIn
			r.TokensOut += row.TokensOut
			r.CostNanoUSD += row.CostNanoUSD
		}
		return r, err
	}
	c.mu.Lock()
	want := int64(c.requests)
	c.mu.Unlock()
	deadline := time.Now().Add(c.o.Settle)
	var r usageRow
	var err error
	for {
		r, err = read()
		if err == nil && r.Requests >= want {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	time.Sleep(time.Second)
	if r2, err2 := read(); err2 == nil {
		r = r2
	}
	c.mu.Lock()
	c.control = r
	c.mu.Unlock()
	return err
}

func (c *checker) result(start time.Time) Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	by := make(map[string]int, len(c.byTarget))
	for k, v := range c.byTarget {
		by[k] = v
	}
	first := ""
	if c.firstErr != nil {
		first = c.firstErr.Error()
	}
	return Result{FirstError: first, Requests: c.requests, Unanswered: c.unanswered, Forwarded: c.forwarded, Records: c.control.Requests,
		ClientNano: c.nano, ControlNano: c.control.CostNanoUSD, ClientTokens: c.tokens,
		ControlTokens: [2]uint64{c.control.TokensIn, c.control.TokensOut}, ByTarget: by, Elapsed: time.Since(start)}
}
