// Package mesh starts a whole Meridian mesh on this machine from the real
// binaries in bin/: mock OpenAI, Anthropic and Gemini providers (in this
// process), a control plane of one or three meridian-control nodes with
// embedded NATS and table distribution on, and three meridian-edge nodes
// in eu-west, us-east and ap-south whose QUIC links pass through WAN
// relays (shared/testkit/relay) that delay traffic into each region.
//
// An edge is given its identity, its region, its credentials and the
// control plane's address, nothing more: every route, placement,
// provider, tenant and key comes from scripts/devmesh/fleet.yaml, applied
// with `meridianctl apply -f`. `make run` (scripts/devmesh) and `make e2e`
// (scripts/e2e) both start the mesh through this package.
//
// It is development tooling: it must never be imported by edge or control
// code, and it writes only under its state folder.
package mesh

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/relay"
)

// Development secrets: never use them outside this machine.
const (
	AdminToken = "devmesh-admin-token-not-secret"
	NATSToken  = "devmesh-nats-token-not-secret"
	LeafSecret = "devmesh-leaf-password-not-secret"
	MockKey    = "sk-dev-mock"
	// KeyOpen and KeyEU are the fleet's client keys; KeyEU belongs to a
	// tenant whose requests may be served in eu-west only.
	KeyOpen = "sk-devmesh-open-not-secret"
	KeyEU   = "sk-devmesh-eu-only-not-secret"
)

// Site is a region and where it is.
type Site struct {
	Region   string
	Lat, Lon float64
}

// Location is the site as X-Meridian-Client-Location carries it.
func (s Site) Location() string { return fmt.Sprintf("%g,%g", s.Lat, s.Lon) }

// Sites are the mesh's three regions, one edge each, as fleet.yaml lists
// them.
var Sites = []Site{{"eu-west", 53.35, -6.26}, {"us-east", 38.9, -77.4}, {"ap-south", 19.07, 72.88}}

// Options says how to start the mesh.
type Options struct {
	// Bin holds meridian-edge, meridian-control, meridianctl and ollama.
	Bin string
	// Dir is the state folder: models, certificates, Raft data, caches.
	Dir string
	// Fleet is the fleet file template (see fleet.yaml).
	Fleet string
	// ControlNodes is 1 or 3.
	ControlNodes int
	// EdgeBase is the first edge's API port; the others follow.
	EdgeBase int
	// Base is the first of the ports everything else takes (see ports).
	Base int
	// Delay is the one-way delay between two regions' edges, keyed by
	// the two regions in Sites order ("eu-west/us-east"). The WAN relay
	// in front of each edge adds it to each peer's link, told apart by
	// the peer's link address.
	Delay map[string]time.Duration
	// Leaves runs one regional NATS leaf node per site (`meridian-control
	// leaf`, README "Regional leaf nodes") under the control nodes'
	// leafnode listeners; each edge then connects to its region's leaf
	// only.
	Leaves bool
	// LogLevel is the processes' log level.
	LogLevel string
	// Logs receives every process's output, one prefixed line each.
	Logs io.Writer
	// Events receives one line per process that exits on its own.
	Events io.Writer
}

// RunOptions are `make run`'s: edges on 8080–8082, the rest from 7400.
func RunOptions() Options {
	return Options{
		Bin: "bin", Dir: ".meridian/devmesh", Fleet: "scripts/devmesh/fleet.yaml", ControlNodes: 1,
		EdgeBase: 8080, Base: 7400, LogLevel: "warn", Logs: os.Stderr, Events: os.Stdout,
		Delay: map[string]time.Duration{"eu-west/us-east": 40 * time.Millisecond, "eu-west/ap-south": 70 * time.Millisecond, "us-east/ap-south": 90 * time.Millisecond},
	}
}

// Mesh is a running mesh.
type Mesh struct {
	opts     Options
	Controls []*Proc
	Edges    []*Edge
	// Leaves are the regional leaf nodes, by region, with Options.Leaves.
	Leaves   map[string]*Proc
	leafURLs map[string]string // region → its leaf's NATS URL
	Mocks    map[string]*Mock  // by provider ID: mock-openai, mock-anthropic, mock-gemini
	relays   []*relay.Relay
	ports    *ports
	procs    procGroup
	natsURLs []string
	// tableKey and clusterID are what every edge pins, fetched once.
	tableKey, clusterID string
}

// Edge is one edge node and the relay in front of its link.
type Edge struct {
	*Proc
	ID, Region string
	URL        string // its API, http://host:port
	Relay      *relay.Relay
	args       []string
	dataDir    string
	// joinToken is given to the edge's first start only.
	joinToken string
}

// Start brings the whole mesh up and returns once every edge is ready on
// the control plane's table. On error it stops what it started.
func Start(ctx context.Context, o Options) (_ *Mesh, err error) {
	m := &Mesh{opts: o, Mocks: map[string]*Mock{}, Leaves: map[string]*Proc{}, leafURLs: map[string]string{}}
	defer func() {
		if err != nil {
			m.Stop()
		}
	}()
	for _, b := range []string{"meridian-edge", "meridian-control", "meridianctl", "ollama"} {
		if _, err := os.Stat(filepath.Join(o.Bin, b)); err != nil {
			return nil, fmt.Errorf("%s: %w (make build ollama builds it; make run does both)", filepath.Join(o.Bin, b), err)
		}
	}
	if o.ControlNodes != 1 && o.ControlNodes != 3 {
		return nil, fmt.Errorf("control nodes: %d; want 1 or 3", o.ControlNodes)
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, err
	}
	if o.Bin, err = filepath.Abs(o.Bin); err != nil {
		return nil, err
	}
	m.opts = o
	m.ports = newPorts(o)
	if err := m.ports.check(); err != nil {
		return nil, err
	}
	if err := prepare(o.Dir); err != nil {
		return nil, err
	}
	m.procs.events = o.Events
	m.procs.logs = o.Logs

	for _, k := range []struct{ id, kind string }{{"mock-openai", providermock.KindOpenAI}, {"mock-anthropic", providermock.KindAnthropic}, {"mock-gemini", providermock.KindGemini}} {
		mk, err := startMock(k.kind, m.ports.get(k.id))
		if err != nil {
			return nil, err
		}
		m.Mocks[k.id] = mk
	}

	if err := m.startControl(ctx); err != nil {
		return nil, err
	}
	if err := m.applyFleet(ctx); err != nil {
		return nil, err
	}
	if o.Leaves {
		if err := m.startLeaves(ctx); err != nil {
			return nil, err
		}
	}
	for i, s := range Sites {
		if err := m.startEdge(ctx, i, s); err != nil {
			return nil, err
		}
	}
	for _, e := range m.Edges {
		if err := m.waitReady(ctx, e, 3*time.Minute); err != nil {
			return nil, err
		}
	}
	if err := m.WaitConverged(ctx, time.Minute); err != nil {
		return nil, err
	}
	return m, nil
}

// WaitConverged waits until every running edge's router plans, for each
// model another running edge has ready, that edge as a peer target: only
// then does a request for a model held elsewhere find it from the start.
func (m *Mesh) WaitConverged(ctx context.Context, timeout time.Duration) error {
	var last string
	err := waitFor(ctx, timeout, "the edges to know each other's models", func() bool {
		ready := map[string][]string{}
		for _, e := range m.Edges {
			if !e.Alive() {
				continue
			}
			rd, err := e.Readiness()
			if err != nil || rd.Local == nil {
				last = fmt.Sprintf("%s: no readiness (%v)", e.ID, err)
				return false
			}
			for name, st := range rd.Local.Models {
				if st.State == "ready" {
					ready[e.ID] = append(ready[e.ID], name)
				}
			}
		}
		for _, e := range m.Edges {
			if !e.Alive() {
				continue
			}
			for id, models := range ready {
				if id == e.ID {
					continue
				}
				for _, model := range models {
					targets, err := e.Planned(model)
					if err != nil || !slices.Contains(targets, "peer/"+id) {
						last = fmt.Sprintf("%s plans %v for %s, not yet peer/%s (%v)", e.ID, targets, model, id, err)
						return false
					}
				}
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w: %s", err, last)
	}
	return nil
}

// Planned is the targets the edge's dry run (GET /v1/meridian/route)
// plans for model, in order.
func (e *Edge) Planned(model string) ([]string, error) {
	resp, err := httpGet(e.URL+"/v1/meridian/route?model="+model, "")
	if err != nil {
		return nil, err
	}
	var dry struct {
		Targets []struct {
			Target string `json:"target"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(resp.body, &dry); err != nil {
		return nil, fmt.Errorf("dry run: %d %s", resp.status, resp.body)
	}
	var out []string
	for _, t := range dry.Targets {
		out = append(out, t.Target)
	}
	return out, nil
}

// ControlURL is the control nodes' APIs, comma-separated, as
// meridianctl takes them: it asks the next when one is down.
func (m *Mesh) ControlURL() string {
	var urls []string
	for i := range m.opts.ControlNodes {
		urls = append(urls, m.ControlAPI(i))
	}
	return strings.Join(urls, ",")
}

// Env is the environment meridianctl needs to reach the control plane.
func (m *Mesh) Env() []string {
	return append(os.Environ(), "MERIDIAN_CONTROL_ADDR="+m.ControlURL(), "MERIDIAN_CONTROL_TOKEN="+AdminToken)
}

// NATSURLs are the control plane's NATS client URLs.
func (m *Mesh) NATSURLs() []string { return m.natsURLs }

// Dir is the mesh's state folder, absolute.
func (m *Mesh) Dir() string { return m.opts.Dir }

// Ctl runs meridianctl with args and returns its output.
func (m *Mesh) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(m.opts.Bin, "meridianctl"), args...)
	cmd.Env = m.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("meridianctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (m *Mesh) startControl(ctx context.Context) (err error) {
	n := m.opts.ControlNodes
	var peers, routes []string
	for i := 1; i <= n; i++ {
		peers = append(peers, fmt.Sprintf("control-%d=%s", i, m.ports.get(fmt.Sprintf("control-%d Raft", i))))
		routes = append(routes, m.ports.get(fmt.Sprintf("control-%d NATS cluster", i)))
		m.natsURLs = append(m.natsURLs, "nats://"+m.ports.get(fmt.Sprintf("control-%d NATS", i)))
	}
	env := append(os.Environ(), "MERIDIAN_NATS_TOKEN="+NATSToken, "MERIDIAN_NATS_LEAF_PASSWORD="+LeafSecret)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("control-%d", i)
		args := []string{
			"-data-dir", filepath.Join(m.opts.Dir, fmt.Sprintf("control-of-%d", n), name), "-node-name", name, "-node-id", name,
			"-http-addr", m.ports.get(name + " API"), "-raft-addr", m.ports.get(name + " Raft"),
			"-nats-listen", m.ports.get(name + " NATS"), "-admin-tokens", AdminToken, "-log-level", m.opts.LogLevel,
			"-kek-file", filepath.Join(m.opts.Dir, kekFile),
		}
		if m.opts.Leaves {
			args = append(args, "-nats-leaf-listen", m.ports.get(name+" NATS leaf"))
		}
		if n == 1 {
			args = append(args, "-bootstrap")
		} else {
			args = append(args, "-peers", strings.Join(peers, ","),
				"-nats-cluster-listen", m.ports.get(name+" NATS cluster"), "-nats-routes", strings.Join(without(routes, i-1), ","))
		}
		p, err := m.procs.start(name, env, filepath.Join(m.opts.Bin, "meridian-control"), args...)
		if err != nil {
			return err
		}
		m.Controls = append(m.Controls, p)
	}
	down := func() bool { return !slices.ContainsFunc(m.Controls, (*Proc).Alive) }
	defer func() {
		if err == nil && down() {
			err = errors.New("every control node exited while starting (its log above says why)")
		}
	}()
	return waitFor(ctx, 60*time.Second, "the control plane to elect a leader", func() bool {
		if down() {
			return true
		}
		for i := 1; i <= n; i++ {
			if m.leaderIs(fmt.Sprintf("control-%d", i)) {
				return true
			}
		}
		return false
	})
}

// leaderIs reports whether the named control node answers as leader.
func (m *Mesh) leaderIs(name string) bool {
	resp, err := httpGet("http://"+m.ports.get(name+" API")+"/v1/control/cluster", AdminToken)
	if err != nil || resp.status != 200 {
		return false
	}
	var info struct {
		Self     string `json:"self"`
		LeaderID string `json:"leader_id"`
	}
	return json.Unmarshal(resp.body, &info) == nil && info.LeaderID != "" && info.LeaderID == info.Self
}

// Leader returns the index in Controls of the control node that leads,
// or -1.
func (m *Mesh) Leader() int {
	for i, p := range m.Controls {
		if p.Alive() && m.leaderIs(fmt.Sprintf("control-%d", i+1)) {
			return i
		}
	}
	return -1
}

// ControlAPI is control node i's API URL.
func (m *Mesh) ControlAPI(i int) string {
	return "http://" + m.ports.get(fmt.Sprintf("control-%d API", i+1))
}

// applyFleet expands the fleet template into the state folder and
// applies it through meridianctl, as an operator would.
func (m *Mesh) applyFleet(ctx context.Context) error {
	raw, err := os.ReadFile(m.opts.Fleet)
	if err != nil {
		return err
	}
	expanded := strings.NewReplacer("/MESH_DIR", m.opts.Dir,
		"127.0.0.1:7421", m.ports.get("mock-openai"), "127.0.0.1:7422", m.ports.get("mock-anthropic"),
		"127.0.0.1:7423", m.ports.get("mock-gemini")).Replace(string(raw))
	path := filepath.Join(m.opts.Dir, "fleet.yaml")
	if err := os.WriteFile(path, []byte(expanded), 0o644); err != nil {
		return err
	}
	// The first apply after an election may meet a leader still
	// settling; meridianctl's error says so, and a retry lands.
	var last error
	for i := 0; i < 10; i++ {
		if _, last = m.Ctl(ctx, "apply", "-f", path); last == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return last
}

// LeafStatusURL is region's leaf node's status URL, "" without leaves.
func (m *Mesh) LeafStatusURL(region string) string {
	if _, ok := m.Leaves[region]; !ok {
		return ""
	}
	return "http://" + m.ports.get(region+" leaf status") + "/v1/leaf/status"
}

// edgeNATS is where an edge in region connects: its region's leaf, or
// the control nodes.
func (m *Mesh) edgeNATS(region string) []string {
	if u, ok := m.leafURLs[region]; ok {
		return []string{u}
	}
	return m.natsURLs
}

// startLeaves starts one regional leaf node per site under the control
// nodes' leafnode listeners, pinning the control plane's table key, and
// waits until each holds the table.
func (m *Mesh) startLeaves(ctx context.Context) error {
	if err := m.fetchTableKey(ctx); err != nil {
		return err
	}
	var hub []string
	for i := 1; i <= m.opts.ControlNodes; i++ {
		hub = append(hub, m.ports.get(fmt.Sprintf("control-%d NATS leaf", i)))
	}
	env := append(os.Environ(), "MERIDIAN_NATS_LEAF_PASSWORD="+LeafSecret)
	for _, s := range Sites {
		name := "leaf-" + s.Region
		p, err := m.procs.start(name, env, filepath.Join(m.opts.Bin, "meridian-control"), "leaf",
			"-name", name, "-region", s.Region, "-hub", strings.Join(hub, ","),
			"-nats-listen", m.ports.get(s.Region+" leaf NATS"), "-http-addr", m.ports.get(s.Region+" leaf status"),
			"-data-dir", filepath.Join(m.opts.Dir, "leaves", s.Region), "-table-public-key", m.tableKey,
			"-cluster-id", m.clusterID, "-log-level", m.opts.LogLevel)
		if err != nil {
			return err
		}
		m.Leaves[s.Region] = p
		m.leafURLs[s.Region] = "nats://" + m.ports.get(s.Region+" leaf NATS")
	}
	for _, s := range Sites {
		status := m.LeafStatusURL(s.Region)
		err := waitFor(ctx, 60*time.Second, "leaf-"+s.Region+" to hold the table", func() bool {
			resp, err := httpGet(status, "")
			var st struct {
				Revision     uint64 `json:"revision"`
				HubConnected bool   `json:"hub_connected"`
			}
			return err == nil && json.Unmarshal(resp.body, &st) == nil && st.HubConnected && st.Revision > 0
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// startEdge writes edge i's configuration (identity, region,
// credentials, the control plane's address and where to listen) and
// starts it.
func (m *Mesh) startEdge(ctx context.Context, i int, s Site) error {
	id := s.Region + "-1"
	dir := filepath.Join(m.opts.Dir, "edges", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	creds, err := m.Provision(ctx, id, s.Region, filepath.Join(dir, "identity"))
	if err != nil {
		return err
	}
	linkAddr := m.ports.get(id + " link")
	from := map[string]time.Duration{}
	for j, o := range Sites {
		if j < i {
			from[m.ports.get(o.Region+"-1 link")] = m.opts.Delay[o.Region+"/"+s.Region]
		} else if j > i {
			from[m.ports.get(o.Region+"-1 link")] = m.opts.Delay[s.Region+"/"+o.Region]
		}
	}
	r, err := relay.Start(relay.Config{Target: linkAddr, UDPListen: m.ports.get(id + " link relay"), DelayFrom: from})
	if err != nil {
		return portHint(id+" WAN relay", m.ports.get(id+" link relay"), err)
	}
	m.relays = append(m.relays, r)
	var seeds []string
	for j, o := range Sites {
		if j != i {
			seeds = append(seeds, m.ports.get(o.Region+"-1 gossip"))
		}
	}
	api := m.ports.get(id + " API")
	cfg := edgeConfig{
		ID: id, Region: s.Region, Listen: api, LogLevel: m.opts.LogLevel,
		Link: linkAddr, Relay: r.UDPAddr(), Gossip: m.ports.get(id + " gossip"), Seeds: seeds,
		NATS: m.edgeNATS(s.Region), ControlAPI: m.ControlAPI(0), Creds: creds, Dir: dir, Ollama: filepath.Join(m.opts.Bin, "ollama"),
		GeoIP: filepath.Join(m.opts.Dir, "geo.mmdb"),
	}
	path := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(path, []byte(cfg.yaml()), 0o600); err != nil {
		return err
	}
	e := &Edge{ID: id, Region: s.Region, URL: "http://" + api, Relay: r, dataDir: filepath.Join(dir, "ollama"),
		args: []string{"-config", path}, joinToken: creds.JoinToken}
	if err := m.runEdge(e); err != nil {
		return err
	}
	m.Edges = append(m.Edges, e)
	return nil
}

func (m *Mesh) runEdge(e *Edge) error {
	env := append(os.Environ(), "MERIDIAN_SECRET_DEV_MOCK_KEY="+MockKey, "MERIDIAN_GOSSIP_KEYS="+gossipKey)
	if e.joinToken != "" {
		// Used once: a restarted edge starts on the credentials it keeps.
		env = append(env, "MERIDIAN_JOIN_TOKEN="+e.joinToken)
		e.joinToken = ""
	}
	p, err := m.procs.start(e.ID, env, filepath.Join(m.opts.Bin, "meridian-edge"), e.args...)
	if err != nil {
		return err
	}
	e.Proc = p
	return nil
}

// Restart starts a stopped or killed edge again, with the same
// configuration, and waits until it is ready.
func (m *Mesh) Restart(ctx context.Context, e *Edge) error {
	if e.Alive() {
		return fmt.Errorf("%s is running", e.ID)
	}
	if err := m.runEdge(e); err != nil {
		return err
	}
	if err := m.waitReady(ctx, e, 2*time.Minute); err != nil {
		return err
	}
	return m.WaitConverged(ctx, time.Minute)
}

// RestartControl starts control node i again from its data dir.
func (m *Mesh) RestartControl(i int) error {
	old := m.Controls[i]
	if old.Alive() {
		return fmt.Errorf("%s is running", old.Name)
	}
	p, err := m.procs.start(old.Name, old.env, old.bin, old.args...)
	if err != nil {
		return err
	}
	m.Controls[i] = p
	return nil
}

func (m *Mesh) waitReady(ctx context.Context, e *Edge, timeout time.Duration) error {
	var last Readiness
	err := waitFor(ctx, timeout, e.ID+" to be ready on the control plane's table with its placed models loaded", func() bool {
		if !e.Alive() {
			return false
		}
		rd, err := e.Readiness()
		last = rd
		return err == nil && rd.Ready && rd.Local != nil && len(rd.Local.NotReady) == 0
	})
	if err != nil && last.Local != nil {
		for name, st := range last.Local.Models {
			if st.Error != "" {
				return fmt.Errorf("%w: model %s: %s", err, name, st.Error)
			}
		}
	}
	return err
}

// Readiness is the part of an edge's /readyz the launcher reads.
type Readiness struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
	Local  *struct {
		Models map[string]struct {
			State string `json:"state"`
			Error string `json:"error"`
		} `json:"models"`
		NotReady []string `json:"not_ready"`
	} `json:"local"`
	Table *struct {
		Revision         uint64 `json:"revision"`
		Stale            bool   `json:"stale"`
		RejectedRevision uint64 `json:"rejected_revision"`
		RejectedReason   string `json:"rejected_reason"`
		// Unverified is why the edge last refused a message whose
		// signature did not verify.
		Unverified string `json:"unverified"`
	} `json:"table"`
}

// Readiness reads the edge's /readyz.
func (e *Edge) Readiness() (Readiness, error) {
	var rd Readiness
	resp, err := httpGet(e.URL+"/readyz", "")
	if err != nil {
		return rd, err
	}
	err = json.Unmarshal(resp.body, &rd)
	return rd, err
}

// ModelState is the engine's state of a model on this edge ("ready",
// "loading", ...), or "" when the edge does not hold it.
func (e *Edge) ModelState(model string) string {
	rd, err := e.Readiness()
	if err != nil || rd.Local == nil {
		return ""
	}
	return rd.Local.Models[model].State
}

// Stop stops every process, newest first, each given time to drain, and
// closes the mocks and relays. It reaps any Ollama an edge left.
func (m *Mesh) Stop() {
	m.procs.stop()
	for _, r := range m.relays {
		r.Close()
	}
	for _, mk := range m.Mocks {
		mk.Close()
	}
	// The engine's own Ollama dies with its edge; anything found here is
	// a defect worth seeing, so it is said, then cleaned up.
	for _, e := range m.Edges {
		if reapOllama(e.dataDir) && m.opts.Events != nil {
			fmt.Fprintf(m.opts.Events, "devmesh: %s left an Ollama running; killed it\n", e.ID)
		}
	}
}

// Exited delivers the name of each process that exits on its own.
func (m *Mesh) Exited() <-chan string { return m.procs.exitedCh() }

// Mock is a mock provider behind a switch that can make it answer 503 to
// everything, as a provider in an outage does.
type Mock struct {
	Addr     string
	mock     *providermock.Server
	srv      *http.Server
	down     sync.Mutex
	isDown   bool
	requests int64
}

func startMock(kind, addr string) (*Mock, error) {
	cfg := providermock.DefaultConfig()
	cfg.Kind, cfg.APIKey = kind, MockKey
	pm, err := providermock.New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, portHint(kind+" mock provider", addr, err)
	}
	mk := &Mock{Addr: addr, mock: pm}
	mk.srv = &http.Server{Handler: mk, ReadHeaderTimeout: 10 * time.Second}
	go mk.srv.Serve(ln)
	return mk, nil
}

func (mk *Mock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mk.down.Lock()
	down := mk.isDown
	mk.requests++
	mk.down.Unlock()
	if down {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"message":"devmesh: provider outage","type":"server_error","param":null,"code":null}}`))
		return
	}
	mk.mock.ServeHTTP(w, r)
}

// SetDown makes the mock answer 503 to every request, or serve again.
func (mk *Mock) SetDown(down bool) {
	mk.down.Lock()
	mk.isDown = down
	mk.down.Unlock()
}

// Requests is how many requests the mock received.
func (mk *Mock) Requests() int64 {
	mk.down.Lock()
	defer mk.down.Unlock()
	return mk.requests
}

// Close stops the mock.
func (mk *Mock) Close() { mk.srv.Close() }

// ports hands out the mesh's addresses by name, so a port in use is
// reported by what it is for.
type ports struct {
	byName map[string]int
	order  []string
}

func newPorts(o Options) *ports {
	p := &ports{byName: map[string]int{}}
	add := func(name string, port int) {
		p.byName[name] = port
		p.order = append(p.order, name)
	}
	for i, s := range Sites {
		add(s.Region+"-1 API", o.EdgeBase+i)
	}
	next := o.Base
	for i := 1; i <= 3; i++ {
		for _, what := range []string{"API", "Raft", "NATS", "NATS cluster"} {
			if i <= o.ControlNodes {
				add(fmt.Sprintf("control-%d %s", i, what), next)
			}
			next++
		}
	}
	for _, s := range Sites {
		for _, what := range []string{"gossip", "link", "link relay"} {
			add(s.Region+"-1 "+what, next)
			next++
		}
	}
	for _, id := range []string{"mock-openai", "mock-anthropic", "mock-gemini"} {
		add(id, next)
		next++
	}
	if o.Leaves {
		for i := 1; i <= o.ControlNodes; i++ {
			add(fmt.Sprintf("control-%d NATS leaf", i), next)
			next++
		}
		for _, s := range Sites {
			add(s.Region+" leaf NATS", next)
			add(s.Region+" leaf status", next+1)
			next += 2
		}
	}
	return p
}

func (p *ports) get(name string) string {
	port, ok := p.byName[name]
	if !ok {
		panic("mesh: no port named " + name)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// check binds every port, TCP and UDP, for a moment, and names the first
// one something else holds.
func (p *ports) check() error {
	for _, name := range p.order {
		addr := p.get(name)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("port %s (%s) is in use: stop whatever holds it (another make run?) and try again", addr, name)
		}
		ln.Close()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("UDP port %s (%s) is in use: stop whatever holds it (another make run?) and try again", addr, name)
		}
		pc.Close()
	}
	return nil
}

func portHint(what, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s: port %s is in use; stop whatever holds it and try again", what, addr)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Proc is one process of the mesh.
type Proc struct {
	Name   string
	cmd    *exec.Cmd
	env    []string
	bin    string
	args   []string
	done   chan struct{}
	killed bool // by the mesh, on purpose
	mu     sync.Mutex
}

// Alive reports whether the process still runs.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL, as a crash would, and waits for the exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Terminate sends SIGTERM and waits for the process to drain and exit.
func (p *Proc) Terminate() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// procGroup is the processes the mesh runs. Each runs in a process group
// of its own, so Ctrl-C at the terminal reaches only the launcher, which
// stops them in order; each dies with the launcher (Pdeathsig) should
// the launcher itself be killed.
type procGroup struct {
	mu       sync.Mutex
	procs    []*Proc
	exited   chan string
	stopping bool
	wg       sync.WaitGroup
	events   io.Writer
	logs     io.Writer
}

func (g *procGroup) exitedCh() chan string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.exited == nil {
		g.exited = make(chan string, 64)
	}
	return g.exited
}

func (g *procGroup) start(name string, env []string, bin string, args ...string) (*Proc, error) {
	exited := g.exitedCh()
	g.mu.Lock()
	defer g.mu.Unlock()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out := prefixed(name, g.logs)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, env: env, bin: bin, args: args, done: make(chan struct{})}
	g.procs = append(g.procs, p)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := cmd.Wait()
		out.Close()
		close(p.done)
		g.mu.Lock()
		stopping := g.stopping
		g.mu.Unlock()
		p.mu.Lock()
		killed := p.killed
		p.mu.Unlock()
		if stopping || killed {
			return
		}
		if g.events != nil {
			fmt.Fprintf(g.events, "devmesh: %s (pid %d) exited: %v; the rest of the mesh keeps serving\n", name, cmd.Process.Pid, err)
		}
		select {
		case exited <- name:
		default:
		}
	}()
	return p, nil
}

// stop asks every process to drain and stop, and waits: the edges
// first, so that none of them sees its control plane vanish, then the
// control nodes together.
func (g *procGroup) stop() {
	g.mu.Lock()
	g.stopping = true
	procs := g.procs
	g.mu.Unlock()
	var edges, controls []*Proc
	for _, p := range procs {
		if strings.HasPrefix(p.Name, "control-") {
			controls = append(controls, p)
		} else {
			edges = append(edges, p)
		}
	}
	for _, set := range [][]*Proc{edges, controls} {
		for _, p := range set {
			if p.Alive() {
				p.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for _, p := range set {
			select {
			case <-p.done:
			case <-time.After(time.Until(deadline)):
				syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
				<-p.done
			}
		}
	}
	g.wg.Wait()
}

// prefixed writes each line to w with the process name in front.
func prefixed(name string, w io.Writer) io.WriteCloser {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if w != nil {
				fmt.Fprintf(w, "%-12s %s\n", "["+name+"]", sc.Text())
			}
		}
		io.Copy(io.Discard, pr)
	}()
	return pw
}

// reapOllama kills the Ollama process group an edge recorded in its
// engine's data dir (edge/engine writes ollama.pgid), should the edge
// have died without stopping it. The group is checked to still run an
// Ollama first, so a recycled process group is never signalled.
func reapOllama(dataDir string) bool {
	b, err := os.ReadFile(filepath.Join(dataDir, "ollama.pgid"))
	if err != nil {
		return false
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pgid <= 1 || !groupRunsOllama(pgid) {
		return false
	}
	return syscall.Kill(-pgid, syscall.SIGKILL) == nil
}

// groupRunsOllama reports whether a process of group pgid runs ollama.
func groupRunsOllama(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pg, _ := syscall.Getpgid(pid); pg != pgid {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmd), "ollama") {
			return true
		}
	}
	return false
}

// OllamaProcs lists the PIDs of Ollama processes (server or runner) whose
// working directory or command line lies under dir.
func OllamaProcs(dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if !strings.HasSuffix(exe, "/ollama") || zombie(pid) {
			continue
		}
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if strings.HasPrefix(cwd, dir) {
			out = append(out, pid)
		}
	}
	return out
}

// zombie reports whether pid has exited and only waits to be reaped (by
// init, once its edge is gone): it holds no port and runs nothing.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// DataDir is the edge's engine data dir.
func (e *Edge) DataDir() string { return e.dataDir }

func without(s []string, i int) []string {
	out := append([]string{}, s[:i]...)
	return append(out, s[i+1:]...)
}

// waitFor polls cond every 50ms until it holds.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

type response struct {
	status int
	body   []byte
}

var client = &http.Client{Timeout: 5 * time.Second}

func httpGet(url, token string) (response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, b}, err
}

// RouteField returns one field of an answer's x-meridian-route header
// ("target=peer/eu-west-1; model=tiny; attempt=1; …"), "" when absent.
func RouteField(route, name string) string {
	for _, f := range strings.Split(route, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(f), "="); ok && k == name {
			return v
		}
	}
	return ""
}
