package meshtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/edge/gossip"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// Timers the edges run with: short, so breakers cycle within a test.
const (
	breakerThreshold = 3
	breakerCooldown  = 200 * time.Millisecond
)

// Client keys the fleet holds; keyEU belongs to a tenant kept in the EU.
const (
	keyOpen = "sk-meshtest-open-0123456789abcdef"
	keyEU   = "sk-meshtest-eu-0123456789abcdefgh"
)

// site is a region and where it is.
type site struct {
	region   string
	lat, lon float64
}

var (
	dublin   = site{"eu-west", 53.35, -6.26}
	virginia = site{"us-east", 38.9, -77.4}
	mumbai   = site{"ap-south", 19.07, 72.88}
	sites    = []site{dublin, virginia, mumbai}
)

// location is the site as X-Meridian-Client-Location carries it.
func (s site) location() string { return fmt.Sprintf("%g,%g", s.lat, s.lon) }

// mesh is the whole fleet in this process.
type mesh struct {
	control *controltest.Cluster
	leader  *controltest.Member
	// a, b and c are the edges in eu-west, us-east and ap-south; a and
	// b run an engine, when there is an Ollama to run.
	a, b, c *edge
	edges   []*edge
	// upstreams are the mock providers by provider ID.
	upstreams map[string]*upstream
	// noOllama says why the engine scenarios cannot run; "" when they can.
	noOllama string
	client   *http.Client
}

// edge is one running edge node.
type edge struct {
	id, region string
	node       *node.Node
	url        string
	logs       *syncBuffer
	stop       context.CancelFunc
	done       chan error
	stopped    atomic.Bool
}

// upstream is a mock provider behind a switchboard that counts its
// requests and fails them on demand, as a flaky or dead provider would.
type upstream struct {
	id, region, url string
	mock            *providermock.Server
	srv             *http.Server
	requests        atomic.Int64
	failPercent     atomic.Int32 // requests answered 503, at random
	down            atomic.Bool  // every request answered 503

	mu  sync.Mutex
	rnd *rand.Rand
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	fail := u.down.Load()
	if p := u.failPercent.Load(); !fail && p > 0 {
		u.mu.Lock()
		fail = u.rnd.IntN(100) < int(p)
		u.mu.Unlock()
	}
	if fail {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"message":"meshtest: injected outage","type":"server_error","param":null,"code":null}}`))
		return
	}
	u.mock.ServeHTTP(w, r)
}

func startUpstream(t *testing.T, id, region string, seed uint64) *upstream {
	t.Helper()
	mock, err := providermock.New(providermock.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{id: id, region: region, url: "http://" + ln.Addr().String(), mock: mock, rnd: rand.New(rand.NewPCG(seed, 7))}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ollamaBinary finds the Ollama the engine runs: $MERIDIAN_OLLAMA, or
// bin/ollama at the repository root. Without one, why says so; with
// MERIDIAN_REQUIRE_OLLAMA set (make test sets it) that fails the test.
func ollamaBinary(t *testing.T) (bin, why string) {
	bin = os.Getenv("MERIDIAN_OLLAMA")
	if bin == "" {
		bin = filepath.Join(enginetest.RepoRoot(t), "bin", "ollama")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("MERIDIAN_REQUIRE_OLLAMA") != "" {
			t.Fatalf("no Ollama binary at %s: run `make ollama`, or set MERIDIAN_OLLAMA", bin)
		}
		return "", fmt.Sprintf("no Ollama binary at %s (set MERIDIAN_OLLAMA, or run `make ollama`): the engine scenarios need a real Ollama", bin)
	}
	return bin, ""
}

// startMesh starts the control plane, the mock providers, writes the
// fleet through the control API and starts the three edges on it.
func startMesh(t *testing.T) *mesh {
	t.Helper()
	m := &mesh{upstreams: map[string]*upstream{}}
	m.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}
	t.Cleanup(m.client.CloseIdleConnections)

	// Timers doubled: an Ollama starting on two shared cores must not
	// cost the leader its lease.
	m.control = controltest.Start(t, 3, controltest.Options{Distribution: true, ClusterNATS: true, Timers: 2})
	m.leader = m.control.Leader()

	for i, u := range []struct{ id, region string }{
		{"mock-eu-west", "eu-west"}, {"mock-us-east", "us-east"}, {"mock-ap-south", "ap-south"},
		{"resident-eu", "eu-west"}, {"resident-us", "us-east"},
		{"flaky", "us-east"}, {"steady", "us-east"},
	} {
		m.upstreams[u.id] = startUpstream(t, u.id, u.region, uint64(i+1))
	}

	bin, why := ollamaBinary(t)
	m.noOllama = why
	dir := t.TempDir()
	tiny := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	m.writeFleet(t, tiny)

	certs := t.TempDir()
	if err := pki.WriteCA(certs, "meshtest", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"edge-a", "edge-b", "edge-c"} {
		if err := pki.WriteNodeCert(certs, certs, id, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	m.a = m.startEdge(t, "edge-a", dublin.region, certs, nil, func(c *config.Config) {
		if bin == "" {
			return
		}
		c.Local = engine.DefaultConfig()
		c.Local.Enabled, c.Local.Binary = true, bin
		c.Local.DataDir = filepath.Join(dir, "ollama")
		c.Local.NumThread = 1
		c.Local.NumParallel, c.Local.Queue = 2, 16
	})
	// B runs an engine too, so that a placement can move from A to B.
	m.b = m.startEdge(t, "edge-b", virginia.region, certs, []string{m.a.node.Gossip().Addr()}, func(c *config.Config) {
		if bin == "" {
			return
		}
		c.Local = engine.DefaultConfig()
		c.Local.Enabled, c.Local.Binary = true, bin
		c.Local.DataDir = filepath.Join(dir, "ollama-b")
		c.Local.NumThread = 1
		c.Local.NumParallel, c.Local.Queue = 2, 16
	})
	m.c = m.startEdge(t, "edge-c", mumbai.region, certs, []string{m.a.node.Gossip().Addr(), m.b.node.Gossip().Addr()}, nil)
	m.edges = []*edge{m.a, m.b, m.c}

	wait.For(t, 30*time.Second, "every edge to see the other two alive with a link address", func() bool {
		for _, e := range m.edges {
			alive := 0
			for _, mb := range e.node.Gossip().Members() {
				if mb.ID != e.id && mb.State == gossip.StateAlive && mb.QUICAddr != "" {
					alive++
				}
			}
			if alive != 2 {
				return false
			}
		}
		return true
	})
	return m
}

// startEdge starts one edge following the control plane.
func (m *mesh) startEdge(t *testing.T, id, region, certs string, seeds []string, edit func(*config.Config)) *edge {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.NodeID, cfg.Region = id, region
	cfg.Listen = "127.0.0.1:0"
	cfg.DrainTimeout = 2 * time.Second
	cfg.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", Advertise: "127.0.0.1", Cluster: "meridian-meshtest",
		Profile: "local", Keys: []table.Secret{table.Secret(base64.StdEncoding.EncodeToString([]byte("meshtest-gossip!")))}, Seeds: seeds}
	cfg.Link.Enabled, cfg.Link.Listen = true, "127.0.0.1:0"
	cfg.Link.CAFile = filepath.Join(certs, pki.CACertFile)
	cfg.Link.CertFile, cfg.Link.KeyFile = filepath.Join(certs, id+".crt"), filepath.Join(certs, id+".key")
	for _, cm := range m.control.Members {
		cfg.Control.NATSURLs = append(cfg.Control.NATSURLs, cm.NATSURL())
	}
	cfg.Control.Token, cfg.Control.TablePublicKey = controltest.NATSToken, m.control.TableKey()
	cfg.Control.TableCache = filepath.Join(t.TempDir(), "table.pb")
	// The test control plane beats every 100ms; a loaded machine can miss
	// three in a row, and a stale table still serves.
	cfg.Control.StaleAfter = 20
	cfg.Geo.TrustedProxies = []string{"127.0.0.1/32"}
	cfg.Routing.BreakerThreshold, cfg.Routing.BreakerCooldown = breakerThreshold, breakerCooldown
	if edit != nil {
		edit(&cfg)
	}
	logs := &syncBuffer{}
	n, err := node.New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatalf("edge %s: %v", id, err)
	}
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &edge{id: id, region: region, node: n, url: "http://" + n.Addr().String(), logs: logs, stop: cancel, done: make(chan error, 1)}
	go func() { e.done <- n.Run(ctx) }()
	t.Cleanup(func() {
		e.shutdown(t)
		if t.Failed() {
			t.Logf("%s's log (last 3 KiB):\n%s", id, tail(logs.String(), 3<<10))
		}
	})
	wait.For(t, 60*time.Second, id+" ready on the control plane's table", func() bool {
		resp, err := m.client.Get(e.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return e
}

// shutdown stops the edge gracefully and waits for it.
func (e *edge) shutdown(t *testing.T) {
	if e.stopped.Swap(true) {
		return
	}
	e.stop()
	select {
	case <-e.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not stop", e.id)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// writeFleet writes every entity through the control API, as an operator
// would; no edge table is written by hand.
func (m *mesh) writeFleet(t *testing.T, tinyGGUF string) {
	t.Helper()
	for _, s := range sites {
		m.put(t, "regions", s.region, map[string]any{"id": s.region, "latitude": s.lat, "longitude": s.lon})
	}
	for _, n := range []struct{ id, region string }{{"edge-a", "eu-west"}, {"edge-b", "us-east"}, {"edge-c", "ap-south"}} {
		m.put(t, "nodes", n.id, map[string]any{"id": n.id, "region": n.region})
	}
	m.put(t, "models", "tiny", map[string]any{"id": "tiny", "local": true, "gguf": "file://" + tinyGGUF})
	for _, id := range []string{"nearby", "eu-only", "anywhere", "flaky-chat"} {
		m.put(t, "models", id, map[string]any{"id": id})
	}
	for _, u := range m.upstreams {
		m.put(t, "providers", u.id, map[string]any{"id": u.id, "kind": "openai", "base_url": u.url + "/v1", "region": u.region})
	}
	target := func(provider, model string) map[string]any {
		return map[string]any{"provider": provider, "model": model}
	}
	routes := []map[string]any{
		// The engine's copies first, then the route's provider.
		{"model": "tiny", "strategy": "local-first", "targets": []any{target("mock-ap-south", "gpt-4o-mini")}},
		// Written in no useful order: nearest must sort them.
		{"model": "nearby", "strategy": "nearest", "targets": []any{target("mock-us-east", ""), target("mock-ap-south", ""), target("mock-eu-west", "")}},
		// The US provider is written first: residency must skip it.
		{"model": "eu-only", "allowed_regions": []string{"eu-west"}, "targets": []any{target("resident-us", ""), target("resident-eu", "")}},
		{"model": "anywhere", "targets": []any{target("resident-us", ""), target("resident-eu", "")}},
		{"model": "flaky-chat", "targets": []any{target("flaky", ""), target("steady", "")}},
	}
	for _, r := range routes {
		m.put(t, "routes", r["model"].(string), r)
	}
	// A soft budget: spend is reported, nothing is refused.
	m.put(t, "tenants", "open", map[string]any{"id": "open", "monthly_budget": 1000})
	m.put(t, "tenants", "eu-tenant", map[string]any{"id": "eu-tenant", "allowed_regions": []string{"eu-west"}})
	m.put(t, "keys", "key-open", map[string]any{"id": "key-open", "hash": keyHash(keyOpen), "tenant": "open"})
	m.put(t, "keys", "key-eu", map[string]any{"id": "key-eu", "hash": keyHash(keyEU), "tenant": "eu-tenant"})
}

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// put writes one entity through the leader's control API.
func (m *mesh) put(t *testing.T, kind, id string, body any) {
	t.Helper()
	m.write(t, http.MethodPut, "/v1/control/"+kind+"/"+id, body)
}

// del deletes one entity through the control API.
func (m *mesh) del(t *testing.T, kind, id string) {
	t.Helper()
	m.write(t, http.MethodDelete, "/v1/control/"+kind+"/"+id, nil)
}

func (m *mesh) write(t *testing.T, method, path string, body any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Any member takes writes: a follower forwards them to the leader.
	code, b, _, err := m.control.Members[1].Do(ctx, method, path, controltest.AdminToken, r, "Content-Type", "application/json")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s %s: %d %s (%v)", method, path, code, b, err)
	}
}

// answer is one response, read whole.
type answer struct {
	status int
	route  string
	header http.Header
	body   []byte
}

// chat sends an OpenAI chat request for model to the edge, with the
// client key and, when loc is set, the client's location.
func (m *mesh) chat(t testing.TB, e *edge, model, key, loc, extra string) answer {
	t.Helper()
	body := `{"model":"` + model + `","messages":[{"role":"user","content":"hello"}]`
	if extra != "" {
		body += "," + extra
	}
	return m.post(t, e, "/v1/chat/completions", body+"}", key, loc)
}

// messages sends an Anthropic Messages request.
func (m *mesh) messages(t testing.TB, e *edge, model, key, loc string) answer {
	t.Helper()
	body := `{"model":"` + model + `","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}`
	return m.post(t, e, "/v1/messages", body, key, loc, "anthropic-version", "2023-06-01")
}

func (m *mesh) post(t testing.TB, e *edge, path, body, key, loc string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	if loc != "" {
		req.Header.Set("X-Meridian-Client-Location", loc)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := m.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s%s: %v", e.url, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s%s: reading the body: %v", e.url, path, err)
	}
	return answer{status: resp.StatusCode, route: resp.Header.Get("X-Meridian-Route"), header: resp.Header, body: b}
}

// explanation is the dry run's answer, the fields the scenarios read.
type explanation struct {
	Model          string    `json:"model"`
	Strategy       string    `json:"strategy"`
	Targets        []planned `json:"targets"`
	Excluded       []planned `json:"excluded"`
	AllowedRegions []string  `json:"allowed_regions"`
	Refusal        *struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	} `json:"refusal"`
}

type planned struct {
	Kind    string  `json:"kind"`
	Target  string  `json:"target"`
	Region  string  `json:"region"`
	Score   float64 `json:"score"`
	Breaker string  `json:"breaker"`
	Reason  string  `json:"reason"`
	Skipped string  `json:"skipped"`
}

func (x explanation) targets() []string {
	var out []string
	for _, p := range x.Targets {
		out = append(out, p.Target)
	}
	return out
}

// gossipRepair bounds a wait for a peer's ready models to reach another
// edge. Broadcasts carry them within a second; but on a starved CI
// machine memberlist's UDP reads fall behind, the kernel drops the
// packets, and only a push-pull (each node starts one every 15 s in the
// local profile, with one random peer) repairs the view: two rounds of
// them and a margin. A wait that would fail sooner tests the machine. A
// run on this session's last commit caught edge-c's view stale for 20 s
// while edge-a's own record was right.
const gossipRepair = 35 * time.Second

// planFirst is a wait condition: e's dry run for model plans target
// first. While it does not, its error says what e plans instead, why
// each other candidate is left out, which table revision e routes by and
// what gossip tells e of every peer's ready models, so that a timeout
// explains itself.
func (m *mesh) planFirst(t testing.TB, e *edge, model, target string) func() error {
	return func() error {
		x := m.explain(t, e, model)
		if len(x.Targets) > 0 && x.Targets[0].Target == target {
			return nil
		}
		var ex []string
		for _, p := range x.Excluded {
			ex = append(ex, p.Target+"("+p.Reason+")")
		}
		var peers []string
		for _, mb := range e.node.Gossip().Members() {
			if mb.ID != e.id {
				peers = append(peers, fmt.Sprintf("%s %s ready=%v", mb.ID, mb.State, mb.ReadyModels))
			}
		}
		// What each edge's own record says, to tell a stale view here
		// from a stale record there.
		var own []string
		for _, o := range []*edge{m.a, m.b, m.c} {
			if o != nil && o.node != nil && o.node.Gossip() != nil {
				own = append(own, fmt.Sprintf("%s says ready=%v", o.id, o.node.Gossip().ReadyModels()))
			}
		}
		return fmt.Errorf("%s plans %v, excludes %v at table revision %d; gossip: %s; own records: %s",
			e.id, x.targets(), ex, e.node.Gateway().Table().Revision(), strings.Join(peers, "; "), strings.Join(own, "; "))
	}
}

func (x explanation) excluded(target string) (planned, bool) {
	i := slices.IndexFunc(x.Excluded, func(p planned) bool { return p.Target == target })
	if i < 0 {
		return planned{}, false
	}
	return x.Excluded[i], true
}

// explain asks the edge's dry run; query is what follows "model=".
func (m *mesh) explain(t testing.TB, e *edge, query string) explanation {
	t.Helper()
	resp, err := m.client.Get(e.url + "/v1/meridian/route?model=" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var x explanation
	if err := json.NewDecoder(resp.Body).Decode(&x); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("dry run %s: %d %v", query, resp.StatusCode, err)
	}
	return x
}

// routeField returns one field of x-meridian-route, "" when absent.
func routeField(route, name string) string {
	for _, f := range strings.Split(route, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(f), "="); ok && k == name {
			return v
		}
	}
	return ""
}

// openAIError is OpenAI's error body.
type openAIError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Param   string `json:"param"`
		Code    string `json:"code"`
	} `json:"error"`
}

// anthropicError is Anthropic's error body.
type anthropicError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}
