package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/table"
)

type upLinks struct{}

func (upLinks) Down(string) bool { return false }

// hangingPeer answers its first n requests at once, then waits for its
// context like a peer that stopped answering without its link noticing.
type hangingPeer struct {
	n        int
	calls    int
	canceled chan struct{}
}

func (p *hangingPeer) Do(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	p.calls++
	if p.calls <= p.n {
		return &llm.Response{Stream: &chunks{data: []string{`{"x":1}`}}}, nil
	}
	<-ctx.Done()
	close(p.canceled)
	return nil, ctx.Err()
}

func (p *hangingPeer) Close() {}

// TestPeerTTFBBudgetFailsOver: a peer with a known time to first token
// that goes quiet is given up after its budget (here the floor, 200ms),
// its attempt cancelled, and the next target serves the request.
func TestPeerTTFBBudgetFailsOver(t *testing.T) {
	peer := &hangingPeer{n: 3, canceled: make(chan struct{})}
	rc := router.DefaultConfig()
	rc.Node, rc.Links = "edge-a", upLinks{}
	backup := &fake{do: ok(`{"ok":true}`)}
	g := New(Config{
		Router:        router.New(rc),
		PeerTTFBFloor: 200 * time.Millisecond,
		NewProvider:   func(table.Provider) (provider.Provider, error) { return backup, nil },
		Peer:          func(node, addr string) (provider.Provider, error) { return peer, nil },
	})
	tab := &table.Table{
		Providers: []table.Provider{
			{ID: "b", Kind: table.KindPeer, BaseURL: "meridian-link://127.0.0.1:7000/edge-b"},
			{ID: "backup", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1"},
		},
		Models: []table.Model{{ID: "m"}},
		Routes: []*table.Route{{Model: "m", Targets: []table.Target{{Provider: "b"}, {Provider: "backup"}}}},
	}
	if err := g.SetTable(tab); err != nil {
		t.Fatal(err)
	}
	req := func() (*Result, error) {
		return g.Do(context.Background(), &llm.Request{Op: llm.OpChat, Model: "m", Stream: true, Body: []byte(`{}`)})
	}
	for range peer.n {
		res, err := req()
		if err != nil || res.Route.Target != "peer/edge-b" {
			t.Fatalf("warm-up: %+v %v", res.Route, err)
		}
		res.Response.Stream.Close()
	}
	if b := g.Router().Stats("peer/edge-b").TTFTBudget(200 * time.Millisecond); b != 200*time.Millisecond {
		t.Fatalf("budget %v, want the floor", b)
	}
	start := time.Now()
	res, err := req()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.Route.Target != "provider/backup" || !strings.Contains(res.Route.Header(), "peer/edge-b(504)") {
		t.Fatalf("route %s", res.Route.Header())
	}
	select {
	case <-peer.canceled:
	default:
		t.Fatal("the peer's attempt was not cancelled")
	}
	// The budget is 200ms; 10× for a loaded machine.
	if took > 2*time.Second {
		t.Fatalf("failover took %v", took)
	}
	t.Logf("failed over after %v", took)
}

func TestTTFTBudget(t *testing.T) {
	var s router.Stats
	if b := s.TTFTBudget(time.Second); b != 0 {
		t.Fatalf("no samples: budget %v", b)
	}
	for _, d := range []time.Duration{time.Second, 3 * time.Second, time.Second, 3 * time.Second} {
		s.Begin(time.Now(), false)
		s.End(time.Now(), true, false, d, 5, time.Second)
	}
	b := s.TTFTBudget(time.Second)
	if b <= 2*s.TTFT() {
		t.Fatalf("budget %v does not cover the spread (ttft %v)", b, s.TTFT())
	}
}
