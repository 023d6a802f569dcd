package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/scripts/bench/spend/exact"
	"github.com/meridian-mesh/meridian/scripts/devmesh/mesh"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// The fleet (scripts/devmesh/fleet.yaml): tiny runs in eu-west and
// ap-south, tiny-repeat in ap-south only; us-east runs no model.
var scenarios = []scenario{
	{id: "1", name: "local answer", run: localAnswer},
	{id: "2", name: "peer hop, both formats", run: peerHop},
	{id: "3", name: "provider and failover", run: providerFailover},
	{id: "4", name: "Anthropic SDK from a peer", run: anthropicSDKPeer},
	{id: "5", name: "nearest edge by location", run: nearestEdge},
	{id: "6", name: "EU-only key", run: euOnly},
	{id: "7", name: "placement move", run: placementMove},
	{id: "8", name: "leader killed during a change", needs3: true, run: leaderKilled},
	{id: "9", name: "edge SIGKILLed under traffic", run: edgeKilled},
	{id: "10", name: "control plane down", run: controlDown},
	{id: "11", name: "region partitioned", run: partition},
	{id: "12", name: "corrupt table on the bus", run: corruptTable},
	{id: "13", name: "exact spend", run: exactSpend},
	{id: "14", name: "key disabled and revoked, budget spent", run: keyAndBudget},
	{id: "15", name: "one key's rpm held across three edges", run: rpmAcrossEdges},
}

// 1. A local model answers in the client's own region.
func localAnswer(x *env) (string, error) {
	for _, c := range []struct {
		e     *mesh.Edge
		model string
	}{{x.eu, "tiny"}, {x.ap, "tiny"}, {x.ap, "tiny-repeat"}} {
		if _, err := x.expect(c.e, c.model, mesh.KeyOpen, 200, "local", located(site(c.e.Region))...); err != nil {
			return "", err
		}
	}
	r, err := x.nodeSDK("openai", x.eu, "tiny", mesh.KeyOpen, site("eu-west").Location())
	if err != nil {
		return "", err
	}
	if mesh.RouteField(r.Route, "target") != "local" || !strings.HasPrefix(r.Text, "abc") {
		return "", fmt.Errorf("npm openai SDK at eu-west-1: route %q text %q", r.Route, r.Text)
	}
	return "eu-west-1 and ap-south-1 answer their own clients from their own Ollama (target=local), also streamed through the npm openai SDK", nil
}

// 2. A model held only in another region is forwarded to the peer that
// holds it and streamed back, in both client formats.
func peerHop(x *env) (string, error) {
	client := openai.NewClient(option.WithBaseURL(x.eu.URL+"/v1/"), option.WithAPIKey(mesh.KeyOpen), option.WithMaxRetries(0))
	var resp *http.Response
	stream := client.Chat.Completions.NewStreaming(x.ctx, openai.ChatCompletionNewParams{
		Model: "tiny-repeat", MaxTokens: openai.Int(8), Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	}, option.WithResponseInto(&resp))
	text, chunks := "", 0
	for stream.Next() {
		chunks++
		if c := stream.Current(); len(c.Choices) > 0 {
			text += c.Choices[0].Delta.Content
		}
	}
	if err := stream.Err(); err != nil {
		return "", fmt.Errorf("openai-go stream at eu-west-1: %w", err)
	}
	if resp == nil || mesh.RouteField(resp.Header.Get("X-Meridian-Route"), "target") != "peer/ap-south-1" || text != "aaaaaaaa" || chunks < 3 {
		return "", fmt.Errorf("openai-go stream of tiny-repeat at eu-west-1: route %q, %d chunks, text %q", resp.Header.Get("X-Meridian-Route"), chunks, text)
	}
	a, err := x.messages(x.us, "tiny-repeat", mesh.KeyOpen, true)
	if err != nil {
		return "", err
	}
	if a.status != 200 || a.target() != "peer/ap-south-1" || !strings.Contains(string(a.body), "text_delta") || !strings.Contains(string(a.body), "message_stop") {
		return "", fmt.Errorf("Anthropic stream of tiny-repeat at us-east-1: %v", a)
	}
	if _, err := x.expect(x.us, "tiny", mesh.KeyOpen, 200, "peer/eu-west-1", located(site("eu-west"))...); err != nil {
		return "", err
	}
	return fmt.Sprintf("eu-west-1 and us-east-1 forward tiny-repeat to ap-south-1 over QUIC and stream it back, as OpenAI (openai-go, %d chunks) and Anthropic SSE", chunks), nil
}

// 3. A provider model is served by its provider, with failover when that
// provider answers 503.
func providerFailover(x *env) (string, error) {
	for _, c := range []struct{ model, target string }{
		{"gpt-4o-mini", "provider/mock-openai"}, {"claude-sonnet", "provider/mock-anthropic"}, {"gemini-flash", "provider/mock-gemini"},
	} {
		for _, e := range x.m.Edges {
			if _, err := x.expect(e, c.model, mesh.KeyOpen, 200, c.target); err != nil {
				return "", err
			}
		}
	}
	oa := x.m.Mocks["mock-openai"]
	before := oa.Requests()
	oa.SetDown(true)
	defer oa.SetDown(false)
	for _, e := range x.m.Edges {
		a, err := x.expect(e, "resilient-chat", mesh.KeyOpen, 200, "provider/mock-anthropic")
		if err != nil {
			return "", err
		}
		if mesh.RouteField(a.route, "attempt") != "2" {
			return "", fmt.Errorf("resilient-chat at %s with OpenAI down: want the second attempt, route %q", e.ID, a.route)
		}
	}
	if n := oa.Requests() - before; n < 3 {
		return "", fmt.Errorf("the OpenAI mock saw %d requests while down; want one per edge", n)
	}
	return "OpenAI, Anthropic and Gemini models are served by their mocks from every edge; with OpenAI answering 503, resilient-chat fails over to Anthropic (attempt=2)", nil
}

// 4. The Anthropic SDK streams from a local model on a peer.
func anthropicSDKPeer(x *env) (string, error) {
	r, err := x.nodeSDK("anthropic", x.us, "tiny", mesh.KeyOpen, site("eu-west").Location())
	if err != nil {
		return "", err
	}
	if mesh.RouteField(r.Route, "target") != "peer/eu-west-1" || !strings.HasPrefix(r.Text, "abc") || r.Events < 4 {
		return "", fmt.Errorf("npm @anthropic-ai/sdk at us-east-1: route %q, %d events, text %q", r.Route, r.Events, r.Text)
	}
	r, err = x.nodeSDK("anthropic", x.eu, "tiny-repeat", mesh.KeyOpen, "")
	if err != nil {
		return "", err
	}
	if mesh.RouteField(r.Route, "target") != "peer/ap-south-1" || !strings.HasPrefix(r.Text, "aaa") {
		return "", fmt.Errorf("npm @anthropic-ai/sdk at eu-west-1: route %q text %q", r.Route, r.Text)
	}
	return fmt.Sprintf("the npm @anthropic-ai/sdk streams tiny from eu-west-1 through us-east-1, and tiny-repeat from ap-south-1 through eu-west-1 (%d events)", r.Events), nil
}

// 5. Clients located in each region, by trusted header and by GeoIP,
// are served by the nearest edge holding the model.
func nearestEdge(x *env) (string, error) {
	// tiny runs in eu-west and ap-south; from Virginia, Dublin is nearer.
	// An edge holding the model serves it itself; us-east-1, which holds
	// none, sends each client to the holder nearest to that client.
	nearest := map[string]string{"eu-west": "eu-west-1", "us-east": "eu-west-1", "ap-south": "ap-south-1"}
	n := 0
	for _, s := range mesh.Sites {
		for _, how := range [][]string{located(s), fromIP(s.Region)} {
			if _, err := x.expect(x.us, "tiny", mesh.KeyOpen, 200, "peer/"+nearest[s.Region], how...); err != nil {
				return "", err
			}
			if e := x.edge(s.Region); e != x.us {
				if _, err := x.expect(e, "tiny", mesh.KeyOpen, 200, "local", how...); err != nil {
					return "", err
				}
			}
			n++
		}
	}
	return fmt.Sprintf("clients in each region, located by trusted header and by the test GeoIP database (%d locations), are each served by the nearest edge holding tiny: their own, or for us-east-1's clients the nearest peer", n), nil
}

// 6. An EU-only key is never served outside the EU, also when every EU
// edge is down: it gets the clear refusal.
func euOnly(x *env) (string, error) {
	for _, e := range x.m.Edges {
		want := "peer/eu-west-1"
		if e == x.eu {
			want = "local"
		}
		// Located in Asia, where ap-south-1 holds tiny nearer: residency wins.
		if _, err := x.expect(e, "tiny", mesh.KeyEU, 200, want, located(site("ap-south"))...); err != nil {
			return "", err
		}
		if _, err := x.expect(e, "gemini-flash", mesh.KeyEU, 200, "provider/mock-gemini"); err != nil {
			return "", err
		}
		for _, model := range []string{"tiny-repeat", "gpt-4o-mini"} {
			a, err := x.expect(e, model, mesh.KeyEU, 403, "")
			if err != nil {
				return "", err
			}
			if !strings.Contains(string(a.body), `"code":"region_not_allowed"`) {
				return "", fmt.Errorf("%s refused %s without code region_not_allowed: %v", e.ID, model, a)
			}
		}
	}
	x.eu.Kill()
	defer func() {
		if err := x.m.Restart(x.ctx, x.eu); err != nil {
			fmt.Println("e2e: restarting eu-west-1:", err)
		}
	}()
	served := 0
	for _, e := range []*mesh.Edge{x.us, x.ap} {
		err := x.eventually(20*time.Second, e.ID+" to refuse the EU key with eu-west-1 down", func() error {
			a, err := x.chat(e, "tiny", mesh.KeyEU)
			if err != nil {
				return err
			}
			if a.status == 200 {
				served++
			}
			if a.status != 403 || !strings.Contains(string(a.body), "region_not_allowed") {
				return fmt.Errorf("got %v", a)
			}
			a, err = x.messages(e, "tiny", mesh.KeyEU, false)
			if err != nil {
				return err
			}
			if a.status != 403 || !strings.Contains(string(a.body), `"permission_error"`) {
				return fmt.Errorf("Anthropic format: got %v", a)
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	if served > 0 {
		return "", fmt.Errorf("the EU key was served %d times with every EU edge down", served)
	}
	return "the EU key is served only by eu-west-1 (even for a client in Asia) and refused tiny-repeat and US providers; with eu-west-1 SIGKILLed it gets 403 region_not_allowed (OpenAI) and permission_error (Anthropic), never an answer from elsewhere", nil
}

// traffic sends streamed requests from one edge until stopped, counting
// the requests that failed before any content reached the client.
type traffic struct {
	sent, ok, failedEarly, failedLate atomic.Int64
	mu                                sync.Mutex
	targets                           map[string]int
	lastErr                           error
	stop                              chan struct{}
	done                              sync.WaitGroup
}

func (x *env) startTraffic(e *mesh.Edge, model string, clients int, hdr ...string) *traffic {
	t := &traffic{targets: map[string]int{}, stop: make(chan struct{})}
	for range clients {
		t.done.Add(1)
		go func() {
			defer t.done.Done()
			for i := 0; i < 5000; i++ { // bounded: stop ends it long before
				select {
				case <-t.stop:
					return
				default:
				}
				t.sent.Add(1)
				route, started, err := x.streamOne(e, model, mesh.KeyOpen, hdr...)
				t.mu.Lock()
				switch {
				case err == nil:
					t.ok.Add(1)
					t.targets[mesh.RouteField(route, "target")]++
				case started:
					t.failedLate.Add(1)
				default:
					t.failedEarly.Add(1)
					t.lastErr = err
				}
				t.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return t
}

func (t *traffic) finish() {
	close(t.stop)
	t.done.Wait()
}

func (t *traffic) served(target string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.targets[target]
}

func (t *traffic) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("%d sent, %d ok, %d failed before streaming, %d cut mid-stream, targets %v", t.sent.Load(), t.ok.Load(), t.failedEarly.Load(), t.failedLate.Load(), t.targets)
}

// 7. A placement change through meridianctl moves tiny-repeat from
// ap-south to us-east in one step (the placement's region rewritten in
// place): every edge follows, the model unloads where it left and
// answers where it went, and a client sending throughout sees no failed
// request. ap-south-1 keeps serving while us-east-1 loads (make before
// break), and unloads once gossip shows the new copy ready.
func placementMove(x *env) (string, error) {
	revs, _, err := x.tableRevisions()
	if err != nil {
		return "", err
	}
	before := slices.Max(revs)
	t := x.startTraffic(x.eu, "tiny-repeat", 2)
	fail := func(err error) (string, error) {
		t.finish()
		return "", fmt.Errorf("%w (traffic: %v)", err, t)
	}
	time.Sleep(x.hold())
	if _, err := x.m.Ctl(x.ctx, "placement", "set", "tiny-repeat-ap", "model=tiny-repeat", "region=us-east", "desired=1"); err != nil {
		return fail(err)
	}
	err = x.eventually(90*time.Second, "tiny-repeat to be ready on us-east-1", func() error {
		if s := x.us.ModelState("tiny-repeat"); s != "ready" {
			return fmt.Errorf("on us-east-1 it is %q", s)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	err = x.eventually(60*time.Second, "tiny-repeat to leave ap-south-1 and be served from us-east-1", func() error {
		if s := x.ap.ModelState("tiny-repeat"); s != "" {
			return fmt.Errorf("on ap-south-1 it is still %q", s)
		}
		if t.served("peer/us-east-1") == 0 {
			return fmt.Errorf("no request served by us-east-1 yet")
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	time.Sleep(x.hold())
	t.finish()
	revs, _, err = x.tableRevisions()
	if err != nil {
		return "", err
	}
	for i, r := range revs {
		if r <= before || r != revs[0] {
			return "", fmt.Errorf("table revisions after the move %v (before %d): %s did not follow", revs, before, x.m.Edges[i].ID)
		}
	}
	if n := t.failedEarly.Load() + t.failedLate.Load(); n != 0 {
		return "", fmt.Errorf("%d requests failed during the move: %v (last: %v)", n, t, t.lastErr)
	}
	if t.served("peer/ap-south-1") == 0 {
		return "", fmt.Errorf("no request reached ap-south-1 before the move: %v", t)
	}
	return fmt.Sprintf("meridianctl moved tiny-repeat to us-east in one step: every edge at revision %d, unloaded on ap-south-1, ready on us-east-1; a client sending throughout: %v", revs[0], t), nil
}

// 8. The leader is killed during a config change: the change lands
// exactly once, on every edge.
func leaderKilled(x *env) (string, error) {
	leader := x.m.Leader()
	if leader < 0 {
		return "", fmt.Errorf("no leader")
	}
	follower := (leader + 1) % len(x.m.Controls)
	// meridianctl takes some milliseconds to start: the kill lands while
	// it sends the change, or while the follower forwards it.
	kill := make(chan struct{})
	go func() {
		time.Sleep(5 * time.Millisecond)
		x.m.Controls[leader].Kill()
		close(kill)
	}()
	addr := x.m.ControlAPI(follower)
	// The change goes through a follower, which forwards it to the
	// leader; when the leader dies under it, meridianctl is run again,
	// as an operator would: a PUT of the same route lands once.
	var err error
	tries := 0
	for ; tries < 20; tries++ {
		if _, err = x.m.Ctl(x.ctx, "-addr", addr, "route", "set", "claude-sonnet", "targets=mock-anthropic:claude-sonnet-4-5,mock-gemini:gemini-2.5-flash"); err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	<-kill
	defer x.m.RestartControl(leader)
	if err != nil {
		return "", err
	}
	out, err := x.m.Ctl(x.ctx, "-addr", addr, "-json", "route", "ls")
	if err != nil {
		return "", err
	}
	if n := strings.Count(out, `"model": "claude-sonnet"`) + strings.Count(out, `"model":"claude-sonnet"`); n != 1 {
		return "", fmt.Errorf("route claude-sonnet listed %d times after the change: %s", n, out)
	}
	err = x.eventually(20*time.Second, "every edge to plan the changed route", func() error {
		for _, e := range x.m.Edges {
			if n, err := x.plannedTargets(e, "claude-sonnet"); err != nil || n != 2 {
				return fmt.Errorf("%s plans %d targets for claude-sonnet (%v)", e.ID, n, err)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if _, err := x.expect(x.us, "claude-sonnet", mesh.KeyOpen, 200, "provider/mock-anthropic"); err != nil {
		return "", err
	}
	return fmt.Sprintf("control-%d (leader) SIGKILLed as a route change was sent to control-%d (meridianctl re-run %d times): it landed once, and every edge plans the new route", leader+1, follower+1, tries), nil
}

// plannedTargets is how many targets the edge's dry run plans for model.
func (x *env) plannedTargets(e *mesh.Edge, model string) (int, error) {
	ts, err := x.planned(e, model)
	return len(ts), err
}

// planned is the targets the edge's dry run plans for model.
func (x *env) planned(e *mesh.Edge, model string) ([]string, error) { return e.Planned(model) }

// 9. An edge is SIGKILLed under traffic from another edge's clients: no
// request fails that had not started streaming, its Ollama leaves no
// orphan, and it restarts clean.
func edgeKilled(x *env) (string, error) {
	// US clients of tiny go to eu-west-1, the nearest holder.
	t := x.startTraffic(x.us, "tiny", 3, located(site("us-east"))...)
	time.Sleep(2 * x.hold())
	pid := x.eu.Pid()
	x.eu.Kill()
	killedAt := time.Now()
	var orphans []int
	err := x.eventually(10*time.Second, "eu-west-1's Ollama to die with it", func() error {
		if orphans = mesh.OllamaProcs(x.eu.DataDir()); len(orphans) > 0 {
			return fmt.Errorf("Ollama processes %v outlive edge pid %d", orphans, pid)
		}
		return nil
	})
	if err != nil {
		t.finish()
		return "", err
	}
	for (t.served("peer/ap-south-1") < 5 || time.Since(killedAt) < x.hold()) && time.Since(killedAt) < 20*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	t.finish()
	if t.failedEarly.Load() != 0 {
		return "", fmt.Errorf("requests failed before streaming: %v (last: %v)", t, t.lastErr)
	}
	if t.served("peer/ap-south-1") < 5 || t.served("peer/eu-west-1") == 0 {
		return "", fmt.Errorf("traffic did not move from eu-west-1 to ap-south-1: %v", t)
	}
	if err := x.m.Restart(x.ctx, x.eu); err != nil {
		return "", err
	}
	if _, err := x.expect(x.eu, "tiny", mesh.KeyOpen, 200, "local"); err != nil {
		return "", err
	}
	return fmt.Sprintf("eu-west-1 SIGKILLed under us-east-1's traffic (%v): its Ollama died with it, and it restarted clean, serving tiny locally", t), nil
}

// 10. The whole control plane stops: edges serve from their last good
// table and say it is stale; when it returns they catch up without a
// restart.
func controlDown(x *env) (string, error) {
	pids := []int{x.eu.Pid(), x.us.Pid(), x.ap.Pid()}
	for _, c := range x.m.Controls {
		c.Terminate()
	}
	err := x.eventually(20*time.Second, "every edge to call its table stale", func() error {
		_, stale, err := x.tableRevisions()
		if err != nil {
			return err
		}
		if slices.Contains(stale, false) {
			return fmt.Errorf("stale: %v", stale)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	for _, e := range x.m.Edges {
		a, err := x.expect(e, "tiny", mesh.KeyOpen, 200, "")
		if err != nil {
			return "", err
		}
		if !strings.Contains(a.rev, "stale") {
			return "", fmt.Errorf("%s served with X-Meridian-Table-Rev %q; want it marked stale", e.ID, a.rev)
		}
	}
	for i := range x.m.Controls {
		if err := x.m.RestartControl(i); err != nil {
			return "", err
		}
	}
	err = x.eventually(30*time.Second, "every edge to be current again", func() error {
		_, stale, err := x.tableRevisions()
		if err != nil {
			return err
		}
		if slices.Contains(stale, true) {
			return fmt.Errorf("stale: %v", stale)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	// A change made now reaches every edge.
	if _, err := x.m.Ctl(x.ctx, "route", "set", "gemini-flash", "targets=mock-gemini:gemini-2.5-flash,mock-openai:gpt-4o-mini"); err != nil {
		return "", err
	}
	err = x.eventually(20*time.Second, "the changed route on every edge", func() error {
		for _, e := range x.m.Edges {
			if n, err := x.plannedTargets(e, "gemini-flash"); err != nil || n != 2 {
				return fmt.Errorf("%s plans %d targets for gemini-flash (%v)", e.ID, n, err)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	for i, e := range x.m.Edges {
		if e.Pid() != pids[i] {
			return "", fmt.Errorf("%s was restarted", e.ID)
		}
	}
	return "with every control node stopped, the edges kept serving (X-Meridian-Table-Rev: stale); restarted, the control plane's next change reached every edge, none of them restarted", nil
}

// 11. A region is partitioned with the WAN relay: its edge keeps serving
// its local models, the others route around it, and it rejoins.
func partition(x *env) (string, error) {
	asia := located(site("ap-south"))
	if _, err := x.expect(x.us, "tiny", mesh.KeyOpen, 200, "peer/ap-south-1", asia...); err != nil {
		return "", err
	}
	x.ap.Relay.Partition(true)
	healed := false
	defer func() {
		if !healed {
			x.ap.Relay.Partition(false)
		}
	}()
	err := x.eventually(30*time.Second, "us-east-1 to route Asian clients around ap-south-1", func() error {
		_, err := x.expect(x.us, "tiny", mesh.KeyOpen, 200, "peer/eu-west-1", asia...)
		return err
	})
	if err != nil {
		return "", err
	}
	for i := 0; i < 10; i++ {
		if _, err := x.expect(x.us, "tiny", mesh.KeyOpen, 200, "peer/eu-west-1", asia...); err != nil {
			return "", fmt.Errorf("around the partition: %w", err)
		}
		if _, err := x.expect(x.ap, "tiny", mesh.KeyOpen, 200, "local", asia...); err != nil {
			return "", fmt.Errorf("inside the partition: %w", err)
		}
	}
	x.ap.Relay.Partition(false)
	healed = true
	err = x.eventually(45*time.Second, "ap-south-1 to rejoin", func() error {
		_, err := x.expect(x.us, "tiny", mesh.KeyOpen, 200, "peer/ap-south-1", asia...)
		return err
	})
	if err != nil {
		return "", err
	}
	return "with ap-south-1's links partitioned, it kept serving tiny locally, us-east-1 sent Asian clients to eu-west-1 instead, and after the partition healed they went to ap-south-1 again", nil
}

// 12. A corrupt table published on the bus with the control plane's
// NATS credentials is rejected by every edge, which keeps serving: the
// credential lets it onto the bus, but it cannot sign as the leader, so
// the edges refuse the table before decoding it.
func corruptTable(x *env) (string, error) {
	revs, _, err := x.tableRevisions()
	if err != nil {
		return "", err
	}
	nc, err := nats.Connect(strings.Join(x.m.NATSURLs(), ","), nats.Token(mesh.NATSToken))
	if err != nil {
		return "", err
	}
	defer nc.Close()
	// Garbage, then a well-formed full table from the future whose route
	// names a provider that does not exist.
	bad := &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: &tablev1.RoutingTable{
		Schema: tablewire.Schema, Revision: revs[0] + 1000,
		Entities: &tablev1.Entities{
			Models: []*controlv1.Model{{Id: "tiny"}},
			Routes: []*controlv1.Route{{Model: "tiny", Targets: []*controlv1.Target{{Provider: "nowhere"}}}},
		},
	}}}
	b, err := proto.Marshal(bad)
	if err != nil {
		return "", err
	}
	for _, msg := range [][]byte{[]byte("\xff\x00 not a table"), b} {
		if err := nc.Publish(tablewire.SubjectUpdate, msg); err != nil {
			return "", err
		}
	}
	if err := nc.Flush(); err != nil {
		return "", err
	}
	time.Sleep(time.Second)
	after, _, err := x.tableRevisions()
	if err != nil {
		return "", err
	}
	if !slices.Equal(after, revs) {
		return "", fmt.Errorf("table revisions %v became %v after the corrupt tables", revs, after)
	}
	for _, e := range x.m.Edges {
		rd, err := e.Readiness()
		if err != nil {
			return "", err
		}
		if rd.Table == nil || rd.Table.Unverified == "" {
			return "", fmt.Errorf("%s does not report a refused unsigned table: %+v", e.ID, rd.Table)
		}
	}
	for _, e := range x.m.Edges {
		if _, err := x.expect(e, "tiny", mesh.KeyOpen, 200, ""); err != nil {
			return "", err
		}
		if _, err := x.expect(e, "gpt-4o-mini", mesh.KeyOpen, 200, "provider/mock-openai"); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("garbage and a future table naming an unknown provider, published on %s with the control plane's NATS token but no signature: every edge refused them as unverified, stayed at revision %d and kept serving", tablewire.SubjectUpdate, revs[0]), nil
}

// 13. Spend is exact: a fresh tenant's requests through all three edges
// (both surfaces, streamed and not, providers, local models and peer
// hops), with ap-south-1 SIGKILLed and restarted midway, add up on the
// control plane to exactly what the clients were served (package
// scripts/bench/spend/exact; make bench-spend is the full form).
func exactSpend(x *env) (string, error) {
	n := 300
	if x.long {
		n = 3000
	}
	r, err := exact.Run(x.ctx, x.m, exact.Options{Requests: n, Workers: 6, Victim: "ap-south-1", Settle: time.Minute})
	if err != nil {
		return "", fmt.Errorf("%w (so far: %v)", err, r)
	}
	if !r.Exact() || r.Forwarded == 0 {
		return "", fmt.Errorf("%s: %v (first client error: %s)", r.Line(), r, r.FirstError)
	}
	return fmt.Sprintf("%v; %s", r, r.Line()), nil
}

// 14. Keys and budgets take effect fleet-wide, through meridianctl: a
// disabled key is refused by every edge (the 401 of an unknown key),
// enabled again it is served, removed it is refused again; a tenant
// with a hard budget smaller than one request's cost is refused by every
// edge with 429 insufficient_quota within 2 s of the answer that spent it.
func keyAndBudget(x *env) (string, error) {
	tenant := fmt.Sprintf("budget-%d", time.Now().UnixNano()%1_000_000)
	if _, err := x.m.Ctl(x.ctx, "tenant", "set", tenant, "--budget", "0.0001", "--hard-limit"); err != nil {
		return "", err
	}
	out, err := x.m.Ctl(x.ctx, "key", "new", "key-"+tenant, "--tenant", tenant, "--json")
	if err != nil {
		return "", err
	}
	var nk struct{ Key string }
	if err := json.Unmarshal([]byte(out), &nk); err != nil || nk.Key == "" {
		return "", fmt.Errorf("key new printed %q: %v", out, err)
	}
	// every waits until each edge answers want for key (OpenAI surface),
	// and says how long that took.
	every := func(key string, want int, what string) (time.Duration, error) {
		start := time.Now()
		err := x.eventually(10*time.Second, what, func() error {
			for _, e := range x.m.Edges {
				a, err := x.chat(e, "gpt-4o-mini", key)
				if err != nil {
					return err
				}
				if a.status != want {
					return fmt.Errorf("%s answered %d: %s", e.ID, a.status, a.body)
				}
			}
			return nil
		})
		return time.Since(start), err
	}
	if _, err := every(nk.Key, 200, "every edge to serve the new key"); err != nil {
		return "", err
	}
	if _, err := x.m.Ctl(x.ctx, "key", "disable", "key-"+tenant); err != nil {
		return "", err
	}
	disabled, err := every(nk.Key, 401, "every edge to refuse the disabled key")
	if err != nil {
		return "", err
	}
	// The refusal is the unknown key's, byte for byte.
	a, err := x.chat(x.eu, "gpt-4o-mini", nk.Key)
	if err != nil {
		return "", err
	}
	u, err := x.chat(x.eu, "gpt-4o-mini", "sk-no-such-key-"+tenant)
	if err != nil {
		return "", err
	}
	if string(a.body) != string(u.body) {
		return "", fmt.Errorf("a disabled key is told %s, an unknown one %s", a.body, u.body)
	}
	if _, err := x.m.Ctl(x.ctx, "key", "enable", "key-"+tenant); err != nil {
		return "", err
	}
	if _, err := every(nk.Key, 200, "every edge to serve the enabled key"); err != nil {
		return "", err
	}

	// One Claude answer ($3/$15 per 1M tokens) costs more than $0.0001.
	b, err := x.chat(x.us, "claude-sonnet", nk.Key)
	if err != nil {
		return "", err
	}
	spent := time.Now()
	if b.status != 200 {
		return "", fmt.Errorf("the spending request: %d %s", b.status, b.body)
	}
	var exhausted time.Duration
	err = x.eventually(10*time.Second, "every edge to refuse the spent tenant", func() error {
		for _, e := range x.m.Edges {
			a, err := x.chat(e, "gpt-4o-mini", nk.Key)
			if err != nil {
				return err
			}
			if a.status != 429 || !strings.Contains(string(a.body), "insufficient_quota") {
				return fmt.Errorf("%s answered %d: %s", e.ID, a.status, a.body)
			}
		}
		exhausted = time.Since(spent)
		return nil
	})
	if err != nil {
		return "", err
	}
	if exhausted > 2*time.Second {
		return "", fmt.Errorf("the spent tenant was refused everywhere only after %v, want within 2s", exhausted)
	}
	m, err := x.messages(x.ap, "claude-sonnet", nk.Key, false)
	if err != nil {
		return "", err
	}
	if m.status != 429 || !strings.Contains(string(m.body), `"type":"error"`) {
		return "", fmt.Errorf("the Anthropic surface told the spent tenant %d %s", m.status, m.body)
	}

	if _, err := x.m.Ctl(x.ctx, "key", "rm", "key-"+tenant); err != nil {
		return "", err
	}
	revoked, err := every(nk.Key, 401, "every edge to refuse the removed key")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("disabled: refused by every edge within %v, as an unknown key; enabled: served again; budget $0.0001 spent by one answer: 429 insufficient_quota on every edge %v after it (Anthropic surface too); removed: refused everywhere within %v",
		disabled.Round(time.Millisecond), exhausted.Round(time.Millisecond), revoked.Round(time.Millisecond)), nil
}

// rpmAcrossEdges sends one key's traffic to all three edges at once, in
// rounds, well above the key's requests-per-minute limit, and checks
// that the fleet admitted at least the limit and at most the limit plus
// edge/limits' documented overshoot: (N−1)/N of the fleet's traffic in
// one exchange delay D (1.5 × the edges' limits interval, 1 s, plus the
// bus; 2 s is taken). Every refusal is a 429 with OpenAI's rate-limit
// headers and Retry-After.
func rpmAcrossEdges(x *env) (string, error) {
	const rpm, rounds, pace, delay = 40, 40, 50 * time.Millisecond, 2 * time.Second
	tenant := fmt.Sprintf("rpm-%d", time.Now().UnixNano()%1_000_000)
	if _, err := x.m.Ctl(x.ctx, "tenant", "set", tenant); err != nil {
		return "", err
	}
	out, err := x.m.Ctl(x.ctx, "key", "new", "key-"+tenant, "--tenant", tenant, "--rpm", strconv.Itoa(rpm), "--json")
	if err != nil {
		return "", err
	}
	var nk struct{ Key string }
	if err := json.Unmarshal([]byte(out), &nk); err != nil || nk.Key == "" {
		return "", fmt.Errorf("key new printed %q: %v", out, err)
	}
	// Every edge must know the key before the count starts: a request
	// an edge refuses as unknown is not the limit's doing. The probe uses
	// one request per edge, which the count below includes.
	probed := 0
	if err := x.eventually(10*time.Second, "every edge to know the key", func() error {
		for _, e := range x.m.Edges[probed:] {
			a, err := x.chat(e, "gpt-4o-mini", nk.Key)
			if err != nil {
				return err
			}
			if a.status != 200 {
				return fmt.Errorf("%s answered %d: %s", e.ID, a.status, a.body)
			}
			probed++
		}
		return nil
	}); err != nil {
		return "", err
	}
	admitted, refused := probed, 0
	var mu sync.Mutex
	var bad error
	start := time.Now()
	for range rounds {
		var wg sync.WaitGroup
		for _, e := range x.m.Edges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := x.chat(e, "gpt-4o-mini", nk.Key)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					bad = err
				case a.status == 200:
					admitted++
				case a.status == 429 && a.hdr.Get("Retry-After") != "" && a.hdr.Get("X-Ratelimit-Limit-Requests") == strconv.Itoa(rpm) &&
					a.hdr.Get("X-Ratelimit-Remaining-Requests") == "0" && strings.Contains(string(a.body), "rate_limit"):
					refused++
				default:
					bad = fmt.Errorf("%s answered %d (headers %v): %s", e.ID, a.status, a.hdr, a.body)
				}
			}()
		}
		wg.Wait()
		if bad != nil {
			return "", bad
		}
		time.Sleep(pace)
	}
	took := time.Since(start)
	sent := rounds * len(x.m.Edges)
	n := len(x.m.Edges)
	rate := float64(sent) / took.Seconds()
	bound := rpm + int(math.Ceil(float64(n-1)/float64(n)*rate*delay.Seconds()))
	if admitted < rpm || admitted > bound {
		return "", fmt.Errorf("%d of %d requests admitted for an rpm of %d over %v (%.0f req/s); want between %d and %d", admitted, sent+probed, rpm, took.Round(time.Millisecond), rate, rpm, bound)
	}
	return fmt.Sprintf("rpm %d over 3 edges at %.0f req/s for %v: %d admitted (bound %d), %d refused with 429 and OpenAI's rate-limit headers",
		rpm, rate, took.Round(time.Millisecond), admitted, bound, refused), nil
}
