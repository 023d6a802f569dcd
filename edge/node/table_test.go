package node

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/shared/tablewire"

	"github.com/nats-io/nats.go"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/natsd"
	"github.com/meridian-mesh/meridian/control/publish"
	"github.com/meridian-mesh/meridian/edge/config"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// fakeControl is one control node's table side without Raft: an FSM
// written directly, an embedded NATS server and a publisher that leads.
type fakeControl struct {
	fsm    *fsm.FSM
	ns     *natsd.Server
	url    string
	nc     *nats.Conn
	index  atomic.Uint64
	cancel context.CancelFunc
	done   chan struct{}
	// key is the table public key an edge pins (control.table_public_key).
	key string
}

const testNATSToken = "edge-node-test-token-0123456789"

func startFakeControl(t *testing.T, edit ...func(*natsd.Config)) *fakeControl {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ncfg := natsd.DefaultConfig()
	ncfg.Listen, ncfg.Token, ncfg.Logger = "127.0.0.1:0", testNATSToken, quiet
	for _, e := range edit {
		e(&ncfg)
	}
	ns, err := natsd.Start(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.Token(testNATSToken))
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeControl{fsm: fsm.New(fsm.Config{Logger: quiet}), ns: ns, url: ns.ClientURL(), nc: nc, done: make(chan struct{})}
	// The identity a first leader creates, its key in the clear (no KEK).
	pub, priv, _ := ed25519.GenerateKey(nil)
	sealed, _ := (*seal.KEK)(nil).Seal(priv.Seed(), seal.AADTableSigningKey)
	b, _ := fsm.Encode(fsm.TypeSetIdentity, &controlv1.SetIdentity{RequestId: "identity",
		Identity: &controlv1.ClusterIdentity{ClusterId: "fake-cluster", Epoch: 1, PublicKey: pub, SealedPrivateKey: sealed}})
	if r := fc.fsm.Apply(fc.index.Add(1), b); r.GetCode() != "" {
		t.Fatal(r)
	}
	fc.key = tablewire.FormatPublicKey(pub)
	pcfg := publish.DefaultConfig()
	pcfg.Conn, pcfg.Source, pcfg.IsLeader, pcfg.NodeID = nc, fc.fsm, func() bool { return true }, "ctl-1"
	pcfg.HeartbeatInterval, pcfg.Logger = 100*time.Millisecond, quiet
	publisher, err := publish.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fc.cancel = cancel
	go func() { defer close(fc.done); publisher.Run(ctx) }()
	t.Cleanup(fc.stop)
	return fc
}

func (fc *fakeControl) stop() {
	select {
	case <-fc.done:
		return
	default:
	}
	fc.cancel()
	<-fc.done
	fc.nc.Close()
	fc.ns.Shutdown()
}

func (fc *fakeControl) write(t *testing.T, ops ...*controlv1.Op) uint64 {
	t.Helper()
	i := fc.index.Add(1)
	b, err := fsm.Encode(fsm.TypeWrite, &controlv1.Write{RequestId: t.Name() + string(rune('a'+i)), Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	if r := fc.fsm.Apply(i, b); r.GetCode() != "" {
		t.Fatalf("write: %v", r)
	}
	return i
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// An edge following a control plane serves its table, names the revision
// on every response, and, restarted while the control plane is down,
// serves the table from its disk and says it is stale.
func TestEdgeFollowsControlPlane(t *testing.T) {
	t.Setenv("MERIDIAN_SECRET_TEST_MOCK_KEY", mockKey)
	fc := startFakeControl(t)
	cache := filepath.Join(t.TempDir(), "table.pb")
	var rev uint64
	withControl := func(c *config.Config) {
		if rev == 0 {
			rev = fc.write(t,
				fsm.PutOp(&controlv1.Provider{Id: "ctl-mock", Kind: "openai", BaseUrl: c.Table.Providers[0].BaseURL, SecretRef: "env:MERIDIAN_SECRET_TEST_MOCK_KEY"}),
				fsm.PutOp(&controlv1.Model{Id: "ctl-model"}),
				fsm.PutOp(&controlv1.Route{Model: "ctl-model", Targets: []*controlv1.Target{{Provider: "ctl-mock", Model: "gpt-4o-mini"}}}))
		}
		c.Control.NATSURLs, c.Control.TablePublicKey = []string{fc.url}, fc.key
		c.Control.Token = testNATSToken
		c.Control.TableCache = cache
		c.Auth = config.AuthNone // its table lists no keys
	}
	m := startMesh(t, withControl)
	m.waitFor("the control plane's table", func() bool {
		resp, body := get(t, m.url+"/v1/models")
		return strings.Contains(body, "ctl-model") && resp.Header.Get(HeaderTableRevision) == strconv.FormatUint(rev, 10)
	})
	resp := m.post("/v1/chat/completions", `{"model":"ctl-model","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("request through the control table: %d %s", resp.StatusCode, readBody(t, resp))
	}
	if got := resp.Header.Get(HeaderTableRevision); got != strconv.FormatUint(rev, 10) {
		t.Fatalf("%s: %q", HeaderTableRevision, got)
	}
	_, body := get(t, m.url+"/readyz")
	if !strings.Contains(body, `"source":"control"`) || !strings.Contains(body, `"stale":false`) {
		t.Fatalf("readyz: %s", body)
	}
	// Losing the control plane makes the table stale, and it still serves.
	fc.stop()
	m.waitFor("the stale mark", func() bool {
		resp, _ := get(t, m.url+"/healthz")
		return resp.Header.Get(HeaderTableRevision) == strconv.FormatUint(rev, 10)+"; stale"
	})
	m.waitFor("the table on disk", func() bool { return m.node.TableStatus().CachedRevision == rev })
	m.stop()
	<-m.stopped
	m.stopped <- nil // for the cleanup

	// Restarted with no control plane: the disk table, marked stale.
	m2 := startMesh(t, func(c *config.Config) {
		withControl(c)
		c.Table.Models, c.Table.Routes = nil, nil
	})
	resp, body = get(t, m2.url+"/v1/models")
	if !strings.Contains(body, "ctl-model") || resp.Header.Get(HeaderTableRevision) != strconv.FormatUint(rev, 10)+"; stale" {
		t.Fatalf("restarted edge: %s %q", body, resp.Header.Get(HeaderTableRevision))
	}
	_, body = get(t, m2.url+"/readyz")
	if !strings.Contains(body, `"source":"disk"`) || !strings.Contains(body, `"stale":true`) {
		t.Fatalf("readyz: %s", body)
	}
	_, body = get(t, m2.url+"/metrics")
	if !strings.Contains(body, "meridian_table_stale 1") {
		t.Fatal("/metrics lacks meridian_table_stale 1")
	}
	resp = m2.post("/v1/chat/completions", `{"model":"ctl-model","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("request from the disk table: %d", resp.StatusCode)
	}
}

// A request never sees half a table: while the control plane replaces
// the whole set of models revision after revision, every /v1/models
// answer lists one revision's set, complete.
func TestTableSwapIsAtomic(t *testing.T) {
	t.Setenv("MERIDIAN_SECRET_TEST_MOCK_KEY", mockKey)
	fc := startFakeControl(t)
	const perGen = 10
	genOps := func(gen int, base string) []*controlv1.Op {
		var ops []*controlv1.Op
		if gen == 0 {
			ops = append(ops, fsm.PutOp(&controlv1.Provider{Id: "ctl-mock", Kind: "openai", BaseUrl: base, SecretRef: "env:MERIDIAN_SECRET_TEST_MOCK_KEY"}))
		}
		for i := range perGen {
			if gen > 0 {
				ops = append(ops, fsm.DeleteOp(fsm.KindRoute, fmt.Sprintf("g%03d-m%d", gen-1, i)), fsm.DeleteOp(fsm.KindModel, fmt.Sprintf("g%03d-m%d", gen-1, i)))
			}
			id := fmt.Sprintf("g%03d-m%d", gen, i)
			ops = append(ops, fsm.PutOp(&controlv1.Model{Id: id}), fsm.PutOp(&controlv1.Route{Model: id, Targets: []*controlv1.Target{{Provider: "ctl-mock"}}}))
		}
		return ops
	}
	var base string
	m := startMesh(t, func(c *config.Config) {
		base = c.Table.Providers[0].BaseURL
		fc.write(t, genOps(0, base)...)
		c.Control.NATSURLs, c.Control.Token, c.Control.TablePublicKey = []string{fc.url}, testNATSToken, fc.key
		c.Control.TableCache = filepath.Join(t.TempDir(), "table.pb")
		c.Auth = config.AuthNone // its tables list no keys
	})
	m.waitFor("generation 0", func() bool { _, body := get(t, m.url+"/v1/models"); return strings.Contains(body, "g000-m0") })

	stop := make(chan struct{})
	errs := make(chan error, 4)
	var checked atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(m.url + "/v1/models")
				if err != nil {
					errs <- err
					return
				}
				var list struct {
					Data []struct{ ID string } `json:"data"`
				}
				err = json.NewDecoder(resp.Body).Decode(&list)
				resp.Body.Close()
				if err != nil {
					errs <- err
					return
				}
				gens := map[string]int{}
				for _, d := range list.Data {
					g, _, ok := strings.Cut(d.ID, "-m")
					if !ok || len(g) != 4 || g[0] != 'g' {
						errs <- fmt.Errorf("model %q is not from the control plane's table", d.ID)
						return
					}
					gens[g]++
				}
				if len(gens) != 1 {
					errs <- fmt.Errorf("one answer mixes table revisions: %v", gens)
					return
				}
				for g, n := range gens {
					if n != perGen {
						errs <- fmt.Errorf("generation %s has %d of %d models", g, n, perGen)
						return
					}
				}
				checked.Add(1)
			}
		}()
	}
	for gen := 1; gen <= 20; gen++ {
		fc.write(t, genOps(gen, base)...)
		time.Sleep(10 * time.Millisecond) // let readers interleave with applies
	}
	m.waitFor("generation 20", func() bool { _, body := get(t, m.url+"/v1/models"); return strings.Contains(body, "g020-m0") })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if checked.Load() < 20 {
		t.Fatalf("only %d answers checked", checked.Load())
	}
}
