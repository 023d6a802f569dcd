// Command local measures local inference through the edge against the
// same Ollama called directly, in the same run: time to first token and
// tokens per second of streamed chat answers from the project's tiny
// model. The edge runs in process with its local engine (a real
// `ollama serve` from `make ollama`); requests alternate between the two
// paths, so drift on a noisy machine hits both alike.
//
// Its last line is `local: toks_ratio=<x> ttft_added_ms=<x>`: edge
// tokens/s over direct tokens/s (median of per-pair ratios), and the
// median of per-pair differences in time to first token.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
)

type flags struct {
	ollama  string
	samples int
	warmup  int
	tokens  int
	threads int
	readme  string
}

func main() {
	var f flags
	flag.StringVar(&f.ollama, "ollama", "bin/ollama", "the Ollama binary (make ollama)")
	flag.IntVar(&f.samples, "n", 60, "measured requests per path")
	flag.IntVar(&f.warmup, "warmup", 5, "unmeasured requests per path first")
	flag.IntVar(&f.tokens, "tokens", 512, "tokens generated per request")
	flag.IntVar(&f.threads, "threads", 1, "num_thread for both paths")
	flag.StringVar(&f.readme, "readme", "", "README to update between its bench:local markers")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "bench-local:", err)
		os.Exit(1)
	}
}

// sample is one streamed answer as the client saw it.
type sample struct {
	ttft   time.Duration // request sent to first token
	tokens int
	gen    time.Duration // first token to last
}

func (s sample) rate() float64 {
	if s.tokens < 2 || s.gen <= 0 {
		return 0
	}
	return float64(s.tokens-1) / s.gen.Seconds()
}

func run(ctx context.Context, f flags) error {
	bin, err := filepath.Abs(f.ollama)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (run make ollama)", f.ollama, err)
	}
	dir, err := os.MkdirTemp("", "meridian-bench-local-")
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

	cfg := config.DefaultConfig()
	cfg.NodeID, cfg.Listen, cfg.LogLevel = "bench-edge", "127.0.0.1:0", "warn"
	cfg.Local = engine.DefaultConfig()
	cfg.Local.Enabled, cfg.Local.Binary, cfg.Local.DataDir, cfg.Local.NumThread = true, bin, filepath.Join(dir, "ollama"), f.threads
	cfg.Local.Models = []engine.Model{{Name: "tiny", GGUF: gguf, Quantize: "q8_0"}}
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	if err := n.Listen(); err != nil {
		return err
	}
	nctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Run(nctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(2 * time.Minute)
	for ready, _ := n.Engine().Ready(); !ready; ready, _ = n.Engine().Ready() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("the local engine did not become ready within 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	edgeURL := "http://" + n.Addr().String() + "/v1/chat/completions"
	direct := n.Engine().URL() + "/api/chat"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	edgeBody := fmt.Sprintf(`{"model":"tiny","stream":true,"max_tokens":%d,"messages":[{"role":"user","content":"hello"}]}`, f.tokens)
	directBody := fmt.Sprintf(`{"model":"tiny","stream":true,"keep_alive":-1,"options":{"num_predict":%d,"num_thread":%d},"messages":[{"role":"user","content":"hello"}]}`, f.tokens, f.threads)

	var viaEdge, viaDirect []sample
	for i := range f.warmup + f.samples {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Alternate which path goes first, so neither always finds the
		// machine warmer.
		order := []bool{i%2 == 0, i%2 != 0}
		var e, d sample
		for _, viaE := range order {
			var s sample
			var err error
			if viaE {
				s, err = stream(ctx, client, edgeURL, edgeBody, sseToken)
				e = s
			} else {
				s, err = stream(ctx, client, direct, directBody, ndjsonToken)
				d = s
			}
			if err != nil {
				return err
			}
			if s.tokens != f.tokens {
				return fmt.Errorf("a stream gave %d tokens, want %d", s.tokens, f.tokens)
			}
		}
		if i >= f.warmup {
			viaEdge, viaDirect = append(viaEdge, e), append(viaDirect, d)
		}
	}

	ratios, added := make([]float64, len(viaEdge)), make([]float64, len(viaEdge))
	var te, td, re, rd []float64
	for i := range viaEdge {
		ratios[i] = viaEdge[i].rate() / viaDirect[i].rate()
		added[i] = ms(viaEdge[i].ttft - viaDirect[i].ttft)
		te, td = append(te, ms(viaEdge[i].ttft)), append(td, ms(viaDirect[i].ttft))
		re, rd = append(re, viaEdge[i].rate()), append(rd, viaDirect[i].rate())
	}
	table := fmt.Sprintf(`
Tiny model (q8_0), %d tokens per answer, num_thread=%d, %d pairs, loopback:

| path | TTFT p50 | tokens/s p50 |
|---|---|---|
| Ollama directly (/api/chat) | %.2f ms | %.0f |
| through the edge (/v1/chat/completions, SSE) | %.2f ms | %.0f |
| **edge ÷ direct** | **%+.3f ms** | **%.3f×** |

`, f.tokens, f.threads, len(viaEdge), median(td), median(rd), median(te), median(re), median(added), median(ratios))
	fmt.Print(table)
	line := fmt.Sprintf("local: toks_ratio=%.3f ttft_added_ms=%.3f", median(ratios), median(added))
	if f.readme != "" {
		if err := readme.Replace(f.readme, "local", table+"\n```\n"+line+"\n```"); err != nil {
			return err
		}
	}
	fmt.Println(line)
	return nil
}

// stream sends one streamed request and times its tokens; token reports
// whether a line of the answer carries one, and whether it is the last.
func stream(ctx context.Context, c *http.Client, url, body string, token func([]byte) (tok, end bool)) (sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return sample{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return sample{}, fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	var s sample
	var first, last time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		tok, end := token(sc.Bytes())
		if tok {
			last = time.Now()
			if s.tokens == 0 {
				first = last
				s.ttft = first.Sub(start)
			}
			s.tokens++
		}
		if end {
			break
		}
	}
	s.gen = last.Sub(first)
	return s, sc.Err()
}

// sseToken reads the edge's OpenAI-format SSE.
func sseToken(line []byte) (tok, end bool) {
	data, ok := bytes.CutPrefix(line, []byte("data: "))
	if !ok {
		return false, false
	}
	if string(data) == "[DONE]" {
		return false, true
	}
	var c struct {
		Choices []struct {
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	json.Unmarshal(data, &c)
	return len(c.Choices) > 0 && c.Choices[0].Delta.Content != "", false
}

// ndjsonToken reads Ollama's native NDJSON.
func ndjsonToken(line []byte) (tok, end bool) {
	var c struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Done bool `json:"done"`
	}
	json.Unmarshal(line, &c)
	return c.Message.Content != "", c.Done
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
