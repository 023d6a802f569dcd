// Command batch measures batches on one edge with a real local engine
// (`ollama serve` from `make ollama`, the project's tiny model): how
// many lines per second a batch runs, and what it does to interactive
// requests on the same model. In one run, a client sends interactive
// chat requests one after another, first with no batch, then while a
// batch runs, then with no batch again; the p99 latency during the
// batch is compared with the p99 of both quiet phases together.
//
// The edge's batch service (edge/jobs) is bound to an embedded NATS
// with JetStream and the batch streams, as a control plane would
// provide them, and runs its lines through the edge's own handler.
// At the end the output file is checked: every line once (lost, dup).
//
// Its last line is
// `batch: lines_per_s=<n> interactive_p99_ratio=<x> lost=<n> dup=<n>`.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/jobs"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type flags struct {
	ollama      string
	lines       int
	interactive int
	tokens      int
	think       time.Duration
	readme      string
}

func main() {
	var f flags
	flag.StringVar(&f.ollama, "ollama", "bin/ollama", "the Ollama binary (make ollama)")
	flag.IntVar(&f.lines, "lines", 150, "lines in the batch")
	flag.IntVar(&f.interactive, "n", 40, "interactive requests per phase (the quiet phases get half each)")
	flag.IntVar(&f.tokens, "tokens", 16, "max_tokens of every request")
	flag.DurationVar(&f.think, "think", 20*time.Millisecond, "pause between interactive requests")
	flag.StringVar(&f.readme, "readme", "", "README to update between its bench:batch markers")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	if err := run(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "bench-batch:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	bin, err := filepath.Abs(f.ollama)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (run make ollama)", f.ollama, err)
	}
	dir, err := os.MkdirTemp("", "meridian-bench-batch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var model bytes.Buffer
	if err := tinygguf.Write(&model, tinygguf.DefaultOptions()); err != nil {
		return err
	}
	gguf := filepath.Join(dir, "tiny.gguf")
	if err := os.WriteFile(gguf, model.Bytes(), 0o644); err != nil {
		return err
	}

	// The bus: JetStream with the batch streams.
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: filepath.Join(dir, "jetstream"), SyncAlways: true})
	if err != nil {
		return err
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("nats did not start")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := jobswire.Ensure(ctx, js, 1); err != nil {
		return err
	}

	// The edge, with its local engine.
	cfg := config.DefaultConfig()
	cfg.NodeID, cfg.Listen, cfg.LogLevel = "bench-edge", "127.0.0.1:0", "warn"
	cfg.Local = engine.DefaultConfig()
	cfg.Local.Enabled, cfg.Local.Binary, cfg.Local.DataDir = true, bin, filepath.Join(dir, "ollama")
	cfg.Local.Models = []engine.Model{{Name: "tiny", GGUF: gguf, Quantize: "q8_0"}}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.New(cfg, quiet)
	if err != nil {
		return err
	}
	if err := n.Listen(); err != nil {
		return err
	}
	nctx, stopNode := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Run(nctx) }()
	defer func() { stopNode(); <-done }()
	deadline := time.Now().Add(2 * time.Minute)
	for ready, _ := n.Engine().Ready(); !ready; ready, _ = n.Engine().Ready() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("the local engine did not become ready within 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The node's batch service, bound to the bus as a node following a
	// control plane binds it.
	if err := n.Jobs().Start(nc); err != nil {
		return err
	}
	select {
	case <-n.Jobs().Ready():
	case <-time.After(30 * time.Second):
		return errors.New("the batch service did not bind to the streams")
	}
	jobsURL := "http://" + n.Addr().String()
	edgeURL := "http://" + n.Addr().String() + "/v1/chat/completions"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	body := func(i int) string {
		return fmt.Sprintf(`{"model":"tiny","max_tokens":%d,"messages":[{"role":"user","content":"hello %d"}]}`, f.tokens, i)
	}
	interactive := func(count int, until func() bool) ([]time.Duration, error) {
		var out []time.Duration
		for i := 0; i < count && (until == nil || !until()); i++ {
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, edgeURL, strings.NewReader(body(i)))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return nil, fmt.Errorf("interactive request: %d", resp.StatusCode)
			}
			out = append(out, time.Since(start))
			time.Sleep(f.think)
		}
		return out, nil
	}
	// Warm the model and the connections.
	if _, err := interactive(5, nil); err != nil {
		return err
	}
	quiet1, err := interactive(f.interactive/2, nil)
	if err != nil {
		return err
	}

	var in bytes.Buffer
	for i := range f.lines {
		line, _ := json.Marshal(map[string]any{"custom_id": fmt.Sprintf("line-%d", i), "method": "POST", "url": "/v1/chat/completions",
			"body": json.RawMessage(body(1000 + i))})
		in.Write(append(line, '\n'))
	}
	fileID, err := upload(ctx, client, jobsURL, in.Bytes())
	if err != nil {
		return err
	}
	start := time.Now()
	b, err := call(ctx, client, "POST", jobsURL+"/v1/batches",
		fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, fileID))
	if err != nil {
		return err
	}
	finished := make(chan jobs.Batch, 1)
	go func() {
		for ctx.Err() == nil {
			cur, err := call(ctx, client, "GET", jobsURL+"/v1/batches/"+b.ID, "")
			if err == nil && (cur.Status == jobs.StatusCompleted || cur.Status == jobs.StatusFailed || cur.Status == jobs.StatusExpired) {
				finished <- cur
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var final *jobs.Batch
	isDone := func() bool {
		select {
		case fb := <-finished:
			final = &fb
			return true
		default:
			return final != nil
		}
	}
	during, err := interactive(f.interactive, isDone)
	if err != nil {
		return err
	}
	if final == nil {
		select {
		case fb := <-finished:
			final = &fb
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	elapsed := time.Since(start)
	if final.Status != jobs.StatusCompleted {
		return fmt.Errorf("the batch ended %s", final.Status)
	}
	quiet2, err := interactive(f.interactive/2, nil)
	if err != nil {
		return err
	}
	if len(during) < 10 {
		return fmt.Errorf("only %d interactive requests ran during the batch; use more lines", len(during))
	}

	// Every line once.
	seen := map[string]int{}
	if final.OutputFileID != nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", jobsURL+"/v1/files/"+*final.OutputFileID+"/content", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
			var ol jobs.OutputLine
			if json.Unmarshal(l, &ol) == nil && ol.Response != nil && ol.Response.StatusCode == 200 {
				seen[ol.CustomID]++
			}
		}
	}
	lost, dup := 0, 0
	for i := range f.lines {
		switch c := seen[fmt.Sprintf("line-%d", i)]; {
		case c == 0:
			lost++
		case c > 1:
			dup += c - 1
		}
	}

	base := append(quiet1, quiet2...)
	p99q, p99b := pct(base, 0.99), pct(during, 0.99)
	rate := float64(f.lines) / elapsed.Seconds()
	table := fmt.Sprintf(`
Tiny model (q8_0) on the edge's local engine (one slot), %d tokens per answer, the edge's default batch workers; one interactive client (%s between requests):

| | requests | p50 | p99 |
|---|---|---|---|
| interactive, no batch | %d | %.1f ms | %.1f ms |
| interactive, during a %d-line batch | %d | %.1f ms | %.1f ms |
| **during ÷ without** | | | **%.2f×** |

The batch ran %d lines in %.1f s: **%.1f lines/s**, alongside the interactive client.
`, f.tokens, f.think, len(base), ms(pct(base, 0.5)), ms(p99q), f.lines, len(during), ms(pct(during, 0.5)), ms(p99b),
		float64(p99b)/float64(p99q), f.lines, elapsed.Seconds(), rate)
	fmt.Print(table)
	line := fmt.Sprintf("batch: lines_per_s=%.1f interactive_p99_ratio=%.2f lost=%d dup=%d", rate, float64(p99b)/float64(p99q), lost, dup)
	if f.readme != "" {
		if err := readme.Replace(f.readme, "batch", table+"\n```\n"+line+"\n```"); err != nil {
			return err
		}
	}
	fmt.Println(line)
	return nil
}

func upload(ctx context.Context, c *http.Client, base string, data []byte) (string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "bench.jsonl")
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("upload: %d %s", resp.StatusCode, out)
	}
	var f jobs.File
	return f.ID, json.Unmarshal(out, &f)
}

func call(ctx context.Context, c *http.Client, method, url, body string) (jobs.Batch, error) {
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return jobs.Batch{}, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return jobs.Batch{}, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, out)
	}
	var b jobs.Batch
	return b, json.Unmarshal(out, &b)
}

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
