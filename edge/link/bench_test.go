package link

import (
	"context"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// BenchmarkForward is one plain forwarded request on loopback: on a
// warm link, and on a new link that resumes its session with 0-RTT.
func BenchmarkForward(b *testing.B) {
	c := newTestCluster(b)
	h := func(ctx context.Context, req *llm.Request) (*llm.Response, error) {
		return &llm.Response{Body: []byte(`{"ok":true}`)}, nil
	}
	srv := startTransport(b, c.config(b, "edge-b"), h)
	cli := startTransport(b, c.config(b, "edge-a"), nil)
	p := peerOf(b, cli, srv)
	ctx := context.Background()
	req := chatReq(false, "hi")
	if _, err := p.Do(ctx, req, "gpt"); err != nil {
		b.Fatal(err)
	}
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Do(ctx, req, "gpt"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("0rtt", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			p.Disconnect()
			b.StartTimer()
			if _, err := p.Do(ctx, req, "gpt"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
