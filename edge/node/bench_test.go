package node

import (
	"github.com/meridian-mesh/meridian/edge/config"
	"io"
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
