package leaftest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/relay"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// Test credentials: never use them anywhere else.
const (
	adminToken = "leaftest-admin-token-not-secret"
	natsToken  = "leaftest-nats-token-not-secret"
	leafPass   = "leaftest-leaf-password-not-secret"
	mockKey    = "sk-leaftest-mock"
	clientKey  = "sk-leaftest-client-not-secret"
)

var regions = []string{"eu-west", "us-east", "ap-south"}

// repoRoot is the module root, for go build.
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func build(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "./control/cmd/meridian-control", "./control/cmd/meridianctl", "./edge/cmd/meridian-edge")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a started process; its output goes to a file under the test's
// folder, printed when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

type procs struct {
	t   *testing.T
	mu  sync.Mutex
	all []*proc
}

func (ps *procs) start(name string, env []string, bin string, args ...string) *proc {
	ps.t.Helper()
	logPath := filepath.Join(ps.t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		ps.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		ps.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := ps.all
	ps.mu.Unlock()
	for i := len(all) - 1; i >= 0; i-- {
		all[i].stop()
	}
	if ps.t.Failed() {
		for _, p := range all {
			b, _ := os.ReadFile(p.log)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			ps.t.Logf("---- %s (last lines) ----\n%s", p.name, b)
		}
	}
}

func getJSON(url, token string, v any) (int, error) {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		return resp.StatusCode, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

type mesh struct {
	t        *testing.T
	bin, dir string
	ps       *procs
	api      string
	tableKey string
	cluster  string
	leafURL  map[string]string // region → its leaf's NATS URL
	leafHTTP map[string]string // region → its leaf's status URL
	relays   map[string]*relay.Relay
	mockURL  string
}

func (m *mesh) ctl(args ...string) string {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(m.bin, "meridianctl"), args...)
	cmd.Env = append(os.Environ(), "MERIDIAN_CONTROL_ADDR="+m.api, "MERIDIAN_CONTROL_TOKEN="+adminToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		m.t.Fatalf("meridianctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// revision is the control plane's current table revision.
func (m *mesh) revision() uint64 {
	var st struct {
		TableRevision uint64 `json:"table_revision"`
	}
	if _, err := getJSON(m.api+"/v1/control/distribution", adminToken, &st); err != nil {
		return 0
	}
	return st.TableRevision
}

// change writes one fleet change and returns the revision it produced,
// once the control plane publishes it.
func (m *mesh) change(i int) uint64 {
	m.t.Helper()
	before := m.revision()
	m.ctl("region", "set", fmt.Sprintf("extra-%d", i), "latitude=1", "longitude=2")
	var rev uint64
	wait.For(m.t, 30*time.Second, "the control plane to publish change "+fmt.Sprint(i), func() bool {
		rev = m.revision()
		return rev > before
	})
	return rev
}

type readyz struct {
	Table struct {
		Revision uint64 `json:"revision"`
		Source   string `json:"source"`
		Stale    bool   `json:"stale"`
		Server   string `json:"server"`
	} `json:"table"`
}

type edge struct {
	*proc
	id, region, url, cfg, dir string
	env                       []string
}

func (e *edge) table() (readyz, error) {
	var rd readyz
	_, err := getJSON(e.url+"/readyz", "", &rd)
	return rd, err
}

// startEdge writes an edge's config (its region's leaf as its only NATS
// server) and starts it; join is its one-time join token, "" when it
// joined before.
func (m *mesh) startEdge(id, region, join string) *edge {
	m.t.Helper()
	dir := filepath.Join(m.dir, "edges", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		m.t.Fatal(err)
	}
	api := ports.Addr(m.t)
	cfg := fmt.Sprintf(`node_id: %s
region: %s
listen: %s
log_level: info
log_format: text
drain_timeout: 1s
control:
  nats_urls: ["%s"]
  api_url: %s
  join_token_env: MERIDIAN_JOIN_TOKEN
  data_dir: %s/identity
  table_public_key: %s
  cluster_id: %s
  table_cache: %s/table.pb
`, id, region, api, m.leafURL[region], m.api, dir, m.tableKey, m.cluster, dir)
	path := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		m.t.Fatal(err)
	}
	e := &edge{id: id, region: region, url: "http://" + api, cfg: path, dir: dir,
		env: []string{"MERIDIAN_SECRET_MOCK_KEY=" + mockKey}}
	env := e.env
	if join != "" {
		env = append(env, "MERIDIAN_JOIN_TOKEN="+join)
	}
	e.proc = m.ps.start(id, env, filepath.Join(m.bin, "meridian-edge"), "-config", path)
	return e
}

func (m *mesh) restartEdge(e *edge) {
	e.proc = m.ps.start(e.id+"-again", e.env, filepath.Join(m.bin, "meridian-edge"), "-config", e.cfg)
}

func (m *mesh) joinToken(id, region string) string {
	m.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(m.ctl("-json", "node", "token", id, "--region", region, "--ttl", "10m")), &tok); err != nil || tok.Token == "" {
		m.t.Fatalf("node token %s: %v", id, err)
	}
	return tok.Token
}

// waitRevision waits until the edge applied rev from the control plane.
func waitRevision(t *testing.T, e *edge, rev uint64, timeout time.Duration) {
	t.Helper()
	var last readyz
	var lastErr error
	wait.For(t, timeout, fmt.Sprintf("%s to apply revision %d", e.id, rev), func() bool {
		last, lastErr = e.table()
		return lastErr == nil && last.Table.Revision >= rev && last.Table.Source == "control"
	})
	_ = last
}

type leafStatus struct {
	Revision     uint64 `json:"revision"`
	HubConnected bool   `json:"hub_connected"`
	Answering    bool   `json:"answering"`
	Served       uint64 `json:"served"`
	Edges        int    `json:"edges"`
}

func (m *mesh) leaf(region string) leafStatus {
	var st leafStatus
	getJSON(m.leafHTTP[region]+"/v1/leaf/status", "", &st)
	return st
}

func TestRegionalLeaves(t *testing.T) {
	if os.Getenv("MERIDIAN_TEST_LEAVES") == "" {
		t.Skip("starts nine processes (about 35 s once built); make test-leaves runs it (MERIDIAN_TEST_LEAVES=1)")
	}
	bin := build(t)
	dir := t.TempDir()
	ps := &procs{t: t}
	t.Cleanup(ps.stopAll)
	m := &mesh{t: t, bin: bin, dir: dir, ps: ps, leafURL: map[string]string{}, leafHTTP: map[string]string{}, relays: map[string]*relay.Relay{}}

	// A mock provider, so an edge behind a leaf can serve a request and
	// its usage record can travel through the leaf to the control plane.
	mcfg := providermock.DefaultConfig()
	mcfg.Kind, mcfg.APIKey = providermock.KindOpenAI, mockKey
	pm, err := providermock.New(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: pm}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	m.mockURL = "http://" + ln.Addr().String() + "/v1"

	// The control plane: one node with its leafnode listener.
	kek := filepath.Join(dir, "kek.hex")
	if err := seal.Generate(kek); err != nil {
		t.Fatal(err)
	}
	httpAddr, leafAddr := ports.Addr(t), ports.Addr(t)
	m.api = "http://" + httpAddr
	ps.start("control", []string{"MERIDIAN_NATS_TOKEN=" + natsToken, "MERIDIAN_NATS_LEAF_PASSWORD=" + leafPass},
		filepath.Join(bin, "meridian-control"), "-data-dir", filepath.Join(dir, "control"), "-bootstrap",
		"-http-addr", httpAddr, "-raft-addr", ports.Addr(t), "-nats-listen", ports.Addr(t), "-nats-leaf-listen", leafAddr,
		"-admin-tokens", adminToken, "-kek-file", kek, "-log-level", "info")
	wait.For(t, 60*time.Second, "the control node to lead", func() bool {
		var c struct {
			Self     string `json:"self"`
			LeaderID string `json:"leader_id"`
		}
		_, err := getJSON(m.api+"/v1/control/cluster", adminToken, &c)
		return err == nil && c.LeaderID != "" && c.LeaderID == c.Self
	})
	fleet := fmt.Sprintf(`regions:
  - {id: eu-west, latitude: 53.35, longitude: -6.26}
  - {id: us-east, latitude: 38.9, longitude: -77.4}
  - {id: ap-south, latitude: 19.07, longitude: 72.88}
models:
  - {id: gpt-4o-mini, owned_by: mock}
providers:
  - {id: mock, kind: openai, base_url: %s, secret_ref: "env:MERIDIAN_SECRET_MOCK_KEY", region: us-east}
routes:
  - model: gpt-4o-mini
    targets: [{provider: mock}]
prices:
  - {model: gpt-4o-mini, provider: mock, input: 1, output: 2}
tenants:
  - {id: acme}
keys:
  - {id: key-acme, tenant: acme, hash: "sha256:%s"}
`, m.mockURL, sha256hex(clientKey))
	fleetPath := filepath.Join(dir, "fleet.yaml")
	os.WriteFile(fleetPath, []byte(fleet), 0o600)
	wait.For(t, 30*time.Second, "the fleet to apply", func() error {
		cmd := exec.Command(filepath.Join(bin, "meridianctl"), "apply", "-f", fleetPath)
		cmd.Env = append(os.Environ(), "MERIDIAN_CONTROL_ADDR="+m.api, "MERIDIAN_CONTROL_TOKEN="+adminToken)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	var key struct {
		PublicKey string `json:"public_key"`
		ClusterID string `json:"cluster_id"`
	}
	if err := json.Unmarshal([]byte(m.ctl("-json", "table-key")), &key); err != nil || key.PublicKey == "" {
		t.Fatalf("table-key: %v", err)
	}
	m.tableKey, m.cluster = key.PublicKey, key.ClusterID

	// Three regional leaves, each reaching the hub through a relay the
	// test can cut.
	for _, r := range regions {
		rl, err := relay.Start(relay.Config{Target: leafAddr, TCPListen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rl.Close() })
		m.relays[r] = rl
		nats, status := ports.Addr(t), ports.Addr(t)
		m.leafURL[r], m.leafHTTP[r] = "nats://"+nats, "http://"+status
		ps.start("leaf-"+r, []string{"MERIDIAN_NATS_LEAF_PASSWORD=" + leafPass}, filepath.Join(bin, "meridian-control"), "leaf",
			"-name", "leaf-"+r, "-region", r, "-hub", rl.TCPAddr(), "-nats-listen", nats, "-http-addr", status,
			"-data-dir", filepath.Join(dir, "leaf-"+r), "-table-public-key", m.tableKey, "-cluster-id", m.cluster,
			"-ping-interval", "500ms", "-log-level", "info")
	}
	rev0 := m.revision()
	for _, r := range regions {
		wait.For(t, 60*time.Second, "leaf "+r+" to hold the table", func() bool {
			st := m.leaf(r)
			return st.HubConnected && st.Revision >= rev0 && !st.Answering
		})
	}

	// One edge per region, plus a second in eu-west that joins now and
	// starts again later with an empty cache, while its region is cut
	// off.
	var edges []*edge
	for _, r := range regions {
		id := r + "-1"
		edges = append(edges, m.startEdge(id, r, m.joinToken(id, r)))
	}
	spare := m.startEdge("eu-west-2", "eu-west", m.joinToken("eu-west-2", "eu-west"))
	for _, e := range append(edges, spare) {
		// The edge joined after the leaves' table: the change that
		// recorded its NATS key reaches its leaf, which then admits it.
		waitRevision(t, e, rev0, 120*time.Second)
	}

	// Edges behind leaves report what they applied to the control plane.
	wait.For(t, 60*time.Second, "every edge's report to reach the control plane through its leaf", func() error {
		var st struct {
			TableRevision uint64 `json:"table_revision"`
			Edges         []struct {
				Node     string `json:"node"`
				Revision uint64 `json:"revision"`
			} `json:"edges"`
		}
		if _, err := getJSON(m.api+"/v1/control/distribution", adminToken, &st); err != nil {
			return err
		}
		seen := map[string]uint64{}
		for _, e := range st.Edges {
			seen[e.Node] = e.Revision
		}
		for _, e := range append(edges, spare) {
			if seen[e.id] < rev0 {
				return fmt.Errorf("%s reported %d, want ≥ %d (reports: %v)", e.id, seen[e.id], rev0, seen)
			}
		}
		return nil
	})

	// A request served behind a leaf: its usage record reaches the
	// control plane's JetStream through the leaf.
	us := edges[1]
	wait.For(t, 30*time.Second, "a request through "+us.id, func() error {
		return chat(us.url)
	})
	wait.For(t, 60*time.Second, "the request's usage to reach the control plane", func() error {
		var u struct {
			Rows []struct {
				Requests uint64 `json:"requests"`
			} `json:"rows"`
		}
		if _, err := getJSON(m.api+"/v1/control/usage?tenant=acme", adminToken, &u); err != nil {
			return err
		}
		if len(u.Rows) == 0 || u.Rows[0].Requests == 0 {
			return fmt.Errorf("no usage yet: %+v", u)
		}
		return nil
	})

	// A change reaches every edge through its leaf.
	rev1 := m.change(1)
	for _, e := range append(edges, spare) {
		waitRevision(t, e, rev1, 60*time.Second)
	}

	// Cut eu-west's leaf from the hub; stop its spare edge and empty its
	// cache.
	spare.stop()
	os.Remove(filepath.Join(spare.dir, "table.pb"))
	wait.For(t, 30*time.Second, "eu-west's leaf to hold revision "+fmt.Sprint(rev1), func() bool { return m.leaf("eu-west").Revision >= rev1 })
	m.relays["eu-west"].Partition(true)
	wait.For(t, 30*time.Second, "eu-west's leaf to notice the cut and answer", func() bool {
		st := m.leaf("eu-west")
		return !st.HubConnected && st.Answering
	})

	// The other regions still get changes; eu-west does not.
	rev2 := m.change(2)
	for _, e := range edges[1:] {
		waitRevision(t, e, rev2, 60*time.Second)
	}

	// A new edge process with no table in the cut-off region gets the
	// last table from its leaf.
	m.restartEdge(spare)
	waitRevision(t, spare, rev1, 60*time.Second)
	if rd, _ := spare.table(); rd.Table.Revision != rev1 {
		t.Fatalf("eu-west-2 got revision %d from its cut-off leaf, want %d", rd.Table.Revision, rev1)
	}
	if rd, _ := edges[0].table(); rd.Table.Revision != rev1 {
		t.Fatalf("eu-west-1 moved to revision %d while its region was cut off, want %d", rd.Table.Revision, rev1)
	}
	if st := m.leaf("eu-west"); st.Served == 0 {
		t.Fatalf("eu-west's leaf answered no snapshot request: %+v", st)
	}

	// The cut heals: the region catches up, and the leaf stops answering.
	m.relays["eu-west"].Partition(false)
	for _, e := range []*edge{edges[0], spare} {
		waitRevision(t, e, rev2, 90*time.Second)
	}
	wait.For(t, 30*time.Second, "eu-west's leaf to reconnect and stop answering", func() bool {
		st := m.leaf("eu-west")
		return st.HubConnected && !st.Answering && st.Revision >= rev2
	})
}

func chat(url string) error {
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+clientKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return nil
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
