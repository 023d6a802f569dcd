package node

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
}

const testNATSToken = "edge-node-test-token-0123456789"

func startFakeControl(t *testing.T) *fakeControl {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ncfg := natsd.DefaultConfig()
	ncfg.Listen, ncfg.Token, ncfg.Logger = "127.0.0.1:0", testNATSToken, quiet
	ns, err := natsd.Start(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.Token(testNATSToken))
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeControl{fsm: fsm.New(fsm.Config{Logger: quiet}), ns: ns, url: ns.ClientURL(), nc: nc, done: make(chan struct{})}
	pcfg := publish.DefaultConfig()
	pcfg.Conn, pcfg.Source, pcfg.IsLeader, pcfg.NodeID = nc, fc.fsm, func() bool { return true }, "ctl-1"
	pcfg.HeartbeatInterval, pcfg.Logger = 100*time.Millisecond, quiet
	pub, err := publish.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fc.cancel = cancel
	go func() { defer close(fc.done); pub.Run(ctx) }()
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
	t.Setenv("MERIDIAN_TEST_MOCK_KEY", mockKey)
	fc := startFakeControl(t)
	cache := filepath.Join(t.TempDir(), "table.pb")
	var rev uint64
	withControl := func(c *config.Config) {
		if rev == 0 {
			rev = fc.write(t,
				fsm.PutOp(&controlv1.Provider{Id: "ctl-mock", Kind: "openai", BaseUrl: c.Table.Providers[0].BaseURL, SecretRef: "env:MERIDIAN_TEST_MOCK_KEY"}),
				fsm.PutOp(&controlv1.Model{Id: "ctl-model"}),
				fsm.PutOp(&controlv1.Route{Model: "ctl-model", Targets: []*controlv1.Target{{Provider: "ctl-mock", Model: "gpt-4o-mini"}}}))
		}
		c.Control.NATSURLs = []string{fc.url}
		c.Control.Token = testNATSToken
		c.Control.TableCache = cache
	}
	m := startMesh(t, withControl)
	m.waitFor("the control plane's table", func() bool {
		resp, body := get(t, m.url+"/v1/models")
		return strings.Contains(body, "ctl-model") && resp.Header.Get(HeaderTableRevision) == "1"
	})
	resp := m.post("/v1/chat/completions", `{"model":"ctl-model","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("request through the control table: %d %s", resp.StatusCode, readBody(t, resp))
	}
	if got := resp.Header.Get(HeaderTableRevision); got != "1" {
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
		return resp.Header.Get(HeaderTableRevision) == "1; stale"
	})
	m.waitFor("the table on disk", func() bool { return cacheRevision(cache) == rev })
	m.stop()
	<-m.stopped
	m.stopped <- nil // for the cleanup

	// Restarted with no control plane: the disk table, marked stale.
	m2 := startMesh(t, func(c *config.Config) {
		withControl(c)
		c.Table.Models, c.Table.Routes = nil, nil
	})
	resp, body = get(t, m2.url+"/v1/models")
	if !strings.Contains(body, "ctl-model") || resp.Header.Get(HeaderTableRevision) != "1; stale" {
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
