package node

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/relay"
)

// TestPeerDeathUnderLoad is issue 22's acceptance: three edges with
// gossip and real QUIC links on loopback. edge-2 and edge-3 route
// gpt-4o-mini to edge-1 over a link first, then to their own mock. A
// client sends edge-2 a request every 50 ms; edge-1 is killed.
//
// "Killed" is in-process: edge-1's link socket closes before anything
// else (link.Transport.Kill), so no QUIC close reaches anyone and edge-2
// hears pure silence, and its gossip stops without leaving
// (gossip.Node.Kill). Its HTTP server lives on but gets no traffic.
//
// Asserted: no request fails (they are not streamed, so none had
// started streaming); none is delayed by more than 2 s (the 1 s,
// doubled for -race on a shared machine; the benchmark measures the real
// figure); edge-1 leaves the plans of edge-2 (its own link: link-down)
// and edge-3 (which never dialled it: gossip suspicion) within 2 s (4 s
// through the WAN relay, the bound doubled).
func TestPeerDeathUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
		bound time.Duration
	}{
		{"loopback", 0, 2 * time.Second},
		{"wan 40ms", 40 * time.Millisecond, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) { peerDeath(t, tc.delay, tc.bound) })
	}
}

func peerDeath(t *testing.T, delay, bound time.Duration) {
	dir := linkCerts(t, "edge-1", "edge-2", "edge-3")
	key := table.Secret("AAECAwQFBgcICQoLDA0ODw==")
	gossipOn := func(c *config.Config, id string, seeds ...string) {
		enableLink(c, dir, id)
		c.Region = "eu-west"
		c.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", Advertise: "127.0.0.1",
			Cluster: "meridian-test", Profile: "local", Keys: []table.Secret{key}, Seeds: seeds}
	}
	one := startMesh(t, func(c *config.Config) { gossipOn(c, "edge-1") })
	addr := one.node.Link().Addr().String()
	if delay > 0 {
		r, err := relay.Start(relay.Config{Target: addr, UDPListen: "127.0.0.1:0", Delay: delay})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		addr = r.UDPAddr()
	}
	viaOne := func(id string) func(*config.Config) {
		return func(c *config.Config) {
			gossipOn(c, id, one.node.Gossip().Addr())
			c.Table.Providers = append(c.Table.Providers, table.Provider{ID: "one", Kind: table.KindPeer, BaseURL: "meridian-link://" + addr + "/edge-1"})
			for i := range c.Table.Routes {
				if r := *c.Table.Routes[i]; r.Model == "gpt-4o-mini" { // a copy: the routes may be shared
					r.Targets = append([]table.Target{{Provider: "one", Model: r.Model}}, r.Targets...)
					c.Table.Routes[i] = &r
				}
			}
		}
	}
	two := startMesh(t, viaOne("edge-2"))
	three := startMesh(t, viaOne("edge-3"))
	// Both see edge-1 through gossip and would route to it.
	for _, m := range []*testMesh{two, three} {
		m.waitFor(m.node.cfg.NodeID+" to plan edge-1 first", func() bool {
			p := m.node.gw.Explain(&router.Request{Model: "gpt-4o-mini"})
			return len(p.Targets) > 0 && p.Targets[0].Key == "peer/edge-1"
		})
	}

	type sample struct {
		start  time.Time
		took   time.Duration
		status int
		route  string
	}
	var mu sync.Mutex
	var samples []sample
	var wg sync.WaitGroup
	send := func() {
		defer wg.Done()
		s := sample{start: time.Now()}
		resp, err := http.Post(two.url+"/v1/chat/completions", "application/json",
			strings.NewReader(chatBody("gpt-4o-mini", "hi #mock latency_ms=20", "")))
		if err == nil {
			s.status, s.route = resp.StatusCode, resp.Header.Get("X-Meridian-Route")
			resp.Body.Close()
		}
		s.took = time.Since(s.start)
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
				wg.Add(1)
				go send()
			}
		}
	}()
	// Load until edge-2 has served some requests through edge-1.
	two.waitFor("requests through edge-1", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(samples) >= 10 && strings.Contains(samples[len(samples)-1].route, "target=peer/edge-1;")
	})

	one.node.Link().Kill()
	one.node.Gossip().Kill()
	killed := time.Now()

	out := map[string]time.Duration{}
	reason := map[string]string{}
	deadline := killed.Add(10 * time.Second)
	for len(out) < 2 && time.Now().Before(deadline) {
		for _, m := range []*testMesh{two, three} {
			id := m.node.cfg.NodeID
			if _, ok := out[id]; ok {
				continue
			}
			p := m.node.gw.Explain(&router.Request{Model: "gpt-4o-mini"})
			if i := slices.IndexFunc(p.Plan.Excluded, func(c router.Choice) bool { return c.Key == "peer/edge-1" }); i >= 0 {
				out[id], reason[id] = time.Since(killed), p.Plan.Excluded[i].Reason
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Keep the load on a little longer, then stop it.
	time.Sleep(time.Second)
	close(stopLoad)
	<-loadDone
	wg.Wait()

	for _, id := range []string{"edge-2", "edge-3"} {
		d, ok := out[id]
		switch {
		case !ok:
			t.Errorf("%s still routes to edge-1 10s after the kill", id)
		case d > bound:
			t.Errorf("%s took edge-1 out of routing %v after the kill (%s); bound %v", id, d, reason[id], bound)
		default:
			t.Logf("%s: edge-1 out of routing %v after the kill (%s)", id, d.Round(time.Millisecond), reason[id])
		}
	}
	if reason["edge-3"] != router.ReasonSuspect && reason["edge-3"] != router.ReasonDead {
		t.Errorf("edge-3 excluded edge-1 as %q; want suspicion from gossip", reason["edge-3"])
	}

	var before []time.Duration
	for _, s := range samples {
		if s.start.Add(s.took).Before(killed) {
			before = append(before, s.took)
		}
	}
	slices.Sort(before)
	base := before[len(before)/2]
	failed, worst := 0, time.Duration(0)
	var worstRoute string
	for _, s := range samples {
		if s.status != http.StatusOK {
			failed++
			t.Errorf("request at %v after the kill: status %d, route %s", s.start.Sub(killed), s.status, s.route)
		}
		if added := s.took - base; added > worst {
			worst, worstRoute = added, s.route
		}
	}
	t.Logf("%d requests, %d failed, median %v before the kill, worst added %v (%s)", len(samples), failed, base, worst.Round(time.Millisecond), worstRoute)
	if worst > bound {
		t.Errorf("a request was delayed %v by the dead peer; bound %v", worst, bound)
	}
}
