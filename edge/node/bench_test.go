package node

import (
	"bufio"
	"bytes"
	"github.com/meridian-mesh/meridian/edge/config"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// BenchmarkChatHop measures what one edge hop adds to a plain chat
// request, against the direct call to the same mock in the same loop, so
// the figure is a difference measured under the same machine noise.
func BenchmarkChatHop(b *testing.B) {
	m := startMesh(b, func(c *config.Config) { c.LogLevel = "warn" })
	body := chatBody("gpt-4o-mini", "hello", "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	mockURL := m.node.Gateway().Table().Table().Providers[0].BaseURL + "/chat/completions"
	do := func(url string, auth bool) time.Duration {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth {
			req.Header.Set("Authorization", "Bearer "+mockKey)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	var direct, edge time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		direct += do(mockURL, true)
		edge += do(m.url+"/v1/chat/completions", false)
	}
	b.ReportMetric(float64(direct.Microseconds())/float64(b.N), "direct-us/op")
	b.ReportMetric(float64(edge.Microseconds())/float64(b.N), "edge-us/op")
	b.ReportMetric(float64((edge-direct).Microseconds())/float64(b.N), "added-us/op")
}

// BenchmarkStreamHop measures what one edge hop adds to a 200-chunk
// stream, in time to the first content chunk and per chunk, against
// reading the same stream from the mock directly in the same loop.
func BenchmarkStreamHop(b *testing.B) {
	m := startMesh(b, nil)
	m.node.log = slog.New(slog.DiscardHandler)
	body := chatBody("gpt-4o-mini", "hello #mock chunks=200", `"stream":true`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	mockURL := m.node.Gateway().Table().Table().Providers[0].BaseURL + "/chat/completions"
	do := func(url string, auth bool) (ttft, total time.Duration) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth {
			req.Header.Set("Authorization", "Bearer "+mockKey)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadSlice('\n')
			if ttft == 0 && bytes.Contains(line, []byte(`"content":"H`)) {
				ttft = time.Since(start)
			}
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || ttft == 0 {
			b.Fatalf("status %d, no content", resp.StatusCode)
		}
		return ttft, time.Since(start)
	}
	var direct, edge, directTTFT, edgeTTFT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, t := do(mockURL, true)
		directTTFT, direct = directTTFT+f, direct+t
		f, t = do(m.url+"/v1/chat/completions", false)
		edgeTTFT, edge = edgeTTFT+f, edge+t
	}
	n := float64(b.N)
	b.ReportMetric(float64((edgeTTFT-directTTFT).Microseconds())/n, "added-ttft-us")
	b.ReportMetric(float64((edge-direct).Nanoseconds())/n/200, "added-ns/chunk")
	b.ReportMetric(float64(directTTFT.Microseconds())/n, "direct-ttft-us")
}
