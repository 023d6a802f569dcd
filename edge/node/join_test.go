package node

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/llm"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// joinedEdge runs an edge that joins the fleet through the control API.
func joinedEdge(t *testing.T, m *controltest.Member, node, token, dir string, opts ...func(*config.Config)) (*Node, error) {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.Listen, cfg.Auth = node, "eu", "127.0.0.1:0", config.AuthNone
	cfg.Control.NATSURLs = []string{m.NATSURL()}
	cfg.Control.APIURL, cfg.Control.JoinToken = m.URL, table.Secret(token)
	cfg.Control.DataDir, cfg.Control.TableCache = filepath.Join(dir, "identity"), filepath.Join(dir, "table.pb")
	cfg.Link.Enabled, cfg.Link.Listen = true, "127.0.0.1:0"
	for _, o := range opts {
		o(&cfg)
	}
	n, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, nil
}

func joinToken(t *testing.T, m *controltest.Member, node string) string {
	t.Helper()
	st, b, _, err := m.Do(context.Background(), "POST", "/v1/control/identity/tokens", controltest.AdminToken,
		strings.NewReader(`{"node":"`+node+`","region":"eu"}`))
	if err != nil || st != 201 {
		t.Fatalf("join token: %d %s %v", st, b, err)
	}
	var tr struct{ Token string }
	json.Unmarshal(b, &tr)
	return tr.Token
}

// An edge joins with a one-time token, follows the control plane with its
// own NATS identity, restarts on its stored credentials, and once revoked
// loses the bus and its peers' trust.
func TestEdgeJoinsAndIsRevoked(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 1, controltest.Options{Distribution: true, KEK: kek})
	m := c.Leader()
	if st, b, _, err := m.Do(context.Background(), "PUT", "/v1/control/regions/eu", controltest.AdminToken,
		strings.NewReader(`{"id":"eu","latitude":50,"longitude":8}`)); err != nil || st != 200 {
		t.Fatalf("region: %d %s %v", st, b, err)
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	tokA := joinToken(t, m, "edge-a")
	a, err := joinedEdge(t, m, "edge-a", tokA, dirA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := joinedEdge(t, m, "edge-b", joinToken(t, m, "edge-b"), dirB)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"node.key", "nats.seed"} {
		if fi, err := os.Stat(filepath.Join(dirA, "identity", f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	wait.For(t, 10*time.Second, "edge-a's table over its own NATS identity", func() bool {
		st := a.TableStatus()
		return st.Source == "control" && st.Connected
	})
	wait.For(t, 10*time.Second, "edge-b to list edge-a", func() bool { return b.authorizePeer("edge-a", nil) == nil })
	if err := b.authorizePeer("edge-zz", nil); err == nil {
		t.Fatal("a node the table does not list was authorized")
	}

	// edge-b links to edge-a with the certificates from joining.
	peer, err := b.link.Peer("edge-a", a.link.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	forward := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := peer.Do(ctx, &llm.Request{ID: "r1", Op: llm.OpChat, Model: "none",
			Body: []byte(`{"model":"none","messages":[{"role":"user","content":"hi"}]}`)}, "none")
		if err == nil && resp.Stream != nil {
			resp.Stream.Close()
		}
		return err
	}
	linkUp := func() bool {
		for _, l := range b.link.Links() {
			if l.Node == "edge-a" && l.Up {
				return true
			}
		}
		return false
	}
	forward() // edge-a has no such model; the link comes up all the same
	if !linkUp() {
		t.Fatal("no link from edge-b to edge-a")
	}

	// The token was used: a second edge with it is refused.
	if _, err := joinedEdge(t, m, "edge-a", tokA, t.TempDir()); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use of a join token: %v", err)
	}

	// The edge's NATS identity cannot publish a table.
	seed, _ := os.ReadFile(filepath.Join(dirA, "identity", "nats.seed"))
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	denied := make(chan error, 4)
	nc, err := nats.Connect(m.NATSURL(), nats.Nkey(pub, kp.Sign), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	before := b.TableStatus().Revision
	forged, _ := os.ReadFile(filepath.Join(dirA, "table.pb"))
	nc.Publish(tablewire.SubjectUpdate, forged)
	nc.Flush()
	select {
	case err := <-denied:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("publishing a table: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not refuse a table from an edge identity")
	}
	if got := b.TableStatus(); got.Revision != before || got.RejectedReason != "" {
		t.Fatalf("edge-b saw the forged table: %+v", got)
	}

	// Revocation: edge-a's NATS connection closes and stays refused,
	// and edge-b's table marks it revoked, so its links are refused.
	if st, body, _, err := m.Do(context.Background(), "POST", "/v1/control/identity/revoke/edge-a", controltest.AdminToken, nil); err != nil || st != 200 {
		t.Fatalf("revoke: %d %s %v", st, body, err)
	}
	revoked := time.Now()
	wait.For(t, 5*time.Second, "edge-a to lose NATS", func() bool { return !a.TableStatus().Connected })
	busGone := time.Since(revoked)
	wait.For(t, 5*time.Second, "edge-b to refuse edge-a", func() bool {
		err := b.authorizePeer("edge-a", nil)
		return err != nil && strings.Contains(err.Error(), "revoked")
	})
	t.Logf("after the revocation: edge-a off the bus in %s, edge-b refusing it in %s (polled)", busGone, time.Since(revoked))
	wait.For(t, 5*time.Second, "edge-b to drop its link to edge-a", func() bool { return !linkUp() })
	peer.Disconnect()
	err = forward()
	var le *llm.Error
	if !errors.As(err, &le) || le.Code != "peer_unavailable" && le.Code != "peer_link_lost" {
		t.Fatalf("forwarding to the revoked edge: %v", err)
	}
	if linkUp() {
		t.Fatal("edge-b linked to the revoked edge-a again")
	}
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.id.renew(rctx); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("renewal after revocation: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // a reconnect would come within the reconnect wait
	if a.TableStatus().Connected {
		t.Fatal("the revoked edge reconnected to NATS")
	}

	// Re-admitted with a new token, edge-a's old certificate stays dead
	// for its peers; its new one is accepted.
	old := a.id.current().Leaf
	// Joins are told apart at a one-second tolerance for clocks.
	time.Sleep(1100 * time.Millisecond)
	a2, err := joinedEdge(t, m, "edge-a", joinToken(t, m, "edge-a"), t.TempDir())
	if err != nil {
		t.Fatalf("re-join: %v", err)
	}
	wait.For(t, 5*time.Second, "edge-b to accept the re-joined edge-a", func() bool {
		return b.authorizePeer("edge-a", a2.id.current().Leaf) == nil
	})
	if err := b.authorizePeer("edge-a", old); err == nil || !strings.Contains(err.Error(), "predates") {
		t.Fatalf("edge-a's certificate from before the revocation: %v", err)
	}

	// edge-b restarts on its stored credentials, without a token.
	b2, err := joinedEdge(t, m, "edge-b", "", dirB)
	if err != nil {
		t.Fatalf("restart on stored credentials: %v", err)
	}
	if b2.id.current().Leaf.SerialNumber.Cmp(b.id.current().Leaf.SerialNumber) != 0 {
		t.Fatal("the restarted edge did not reuse its stored certificate")
	}
}

// A joined edge renews its certificate at half its life, by itself, and
// keeps the renewed one on disk.
func TestEdgeRenewsAtHalfLife(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 1, controltest.Options{Distribution: true, KEK: kek, NodeCertTTL: 4 * time.Second})
	m := c.Leader()
	if st, b, _, err := m.Do(context.Background(), "PUT", "/v1/control/regions/eu", controltest.AdminToken,
		strings.NewReader(`{"id":"eu","latitude":50,"longitude":8}`)); err != nil || st != 200 {
		t.Fatalf("region: %d %s %v", st, b, err)
	}
	dir := t.TempDir()
	n, err := joinedEdge(t, m, "edge-r", joinToken(t, m, "edge-r"), dir)
	if err != nil {
		t.Fatal(err)
	}
	first := n.id.current().Leaf
	wait.For(t, 10*time.Second, "a renewed certificate", func() bool {
		return n.id.current().Leaf.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if !time.Now().Before(first.NotAfter) {
		t.Fatal("renewed only after the old certificate expired")
	}
	stored, err := os.ReadFile(filepath.Join(dir, "identity", "node.crt"))
	if err != nil || !strings.Contains(string(stored), "CERTIFICATE") {
		t.Fatalf("stored certificate: %v", err)
	}
	if cur := n.id.current(); string(pki.CertPEM(cur.Leaf.Raw)) != string(stored) {
		t.Fatal("the renewed certificate is not the one on disk")
	}
	if st := n.id.status(); st.Expires.Before(first.NotAfter) || st.RenewError != "" {
		t.Fatalf("identity status after renewal: %+v", st)
	}
}

// A joined edge that pins no table key checks tables against the keys
// its join delivered: it applies the control plane's tables and refuses
// one signed by another key. A staged key reaches it at its next
// renewal, so tables signed after the promotion still apply; an edge
// that pins its keys keeps only those.
func TestJoinedEdgeTakesTableKeysWithItsCertificate(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 1, controltest.Options{Distribution: true, KEK: kek, NodeCertTTL: 4 * time.Second})
	m := c.Leader()
	do := func(method, path, body string) []byte {
		t.Helper()
		st, b, _, err := m.Do(context.Background(), method, path, controltest.AdminToken, strings.NewReader(body))
		if err != nil || st/100 != 2 {
			t.Fatalf("%s %s: %d %s %v", method, path, st, b, err)
		}
		return b
	}
	do("PUT", "/v1/control/regions/eu", `{"id":"eu","latitude":50,"longitude":8}`)
	c.TableKeys() // the first leader creates the key just after its election
	var key struct {
		PublicKey     string `json:"public_key"`
		NextPublicKey string `json:"next_public_key"`
		ClusterID     string `json:"cluster_id"`
	}
	json.Unmarshal(do("GET", "/v1/control/table-key", ""), &key)

	dir := t.TempDir()
	n, err := joinedEdge(t, m, "edge-k", joinToken(t, m, "edge-k"), dir)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := joinedEdge(t, m, "edge-p", joinToken(t, m, "edge-p"), t.TempDir(), func(c *config.Config) {
		c.Control.TablePublicKey = key.PublicKey
	})
	if err != nil {
		t.Fatal(err)
	}
	keysFile := filepath.Join(dir, "identity", "table-keys.json")
	if fi, err := os.Stat(keysFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("table-keys.json: %v %v", fi, err)
	}
	if got := n.id.tableTrust(); got.ClusterID != key.ClusterID || !slices.Equal(got.Keys, []string{key.PublicKey}) {
		t.Fatalf("delivered %+v, the control plane's key is %+v", got, key)
	}
	for _, e := range []*Node{n, pinned} {
		wait.For(t, 10*time.Second, "the control plane's table", func() bool {
			st := e.TableStatus()
			return st.Source == "control" && st.Connected && st.Revision > 0
		})
	}

	// A table signed by another key, at a revision far ahead, is refused.
	nc, err := nats.Connect(m.NATSURL(), nats.Token(controltest.NATSToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, other, _ := ed25519.GenerateKey(nil)
	raw, _ := tablewire.Encode(&tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: &tablev1.RoutingTable{
		Schema: tablewire.Schema, Revision: 1 << 40, ClusterId: key.ClusterID, Epoch: 1 << 20}}})
	before := n.TableStatus().Revision
	nc.Publish(tablewire.SubjectUpdate, tablewire.Sign(other, tablewire.ContextUpdate, tablewire.SignatureField, raw))
	nc.Flush()
	wait.For(t, 5*time.Second, "the refusal", func() bool { return strings.Contains(n.TableStatus().Unverified, "signature") })
	if got := n.TableStatus().Revision; got != before {
		t.Fatalf("the table signed by another key was applied: revision %d, was %d", got, before)
	}

	// Stage a key: the next renewal brings it.
	json.Unmarshal(do("POST", "/v1/control/table-key/stage", ""), &key)
	if key.NextPublicKey == "" {
		t.Fatal("no staged key")
	}
	wait.For(t, 10*time.Second, "the staged key at a renewal", func() bool {
		return slices.Equal(n.id.tableTrust().Keys, []string{key.PublicKey, key.NextPublicKey})
	})
	if b, _ := os.ReadFile(keysFile); !strings.Contains(string(b), key.NextPublicKey) {
		t.Fatalf("the staged key is not on disk: %s", b)
	}
	// Promoted, it signs the next table, which the edge applies.
	do("POST", "/v1/control/table-key/promote", "")
	revNow := func(e *Node) uint64 { return e.TableStatus().Revision }
	beforeN, beforeP := revNow(n), revNow(pinned)
	do("PUT", "/v1/control/regions/us", `{"id":"us","latitude":40,"longitude":-100}`)
	wait.For(t, 10*time.Second, "the table signed by the promoted key", func() bool { return revNow(n) > beforeN })
	wait.For(t, 10*time.Second, "the promoted key alone at a renewal", func() bool {
		return slices.Equal(n.id.tableTrust().Keys, []string{key.NextPublicKey})
	})
	// The edge that pins the old key refuses it, renewals or not.
	wait.For(t, 10*time.Second, "the pinned edge's refusal", func() bool {
		return strings.Contains(pinned.TableStatus().Unverified, "signature")
	})
	if got := revNow(pinned); got != beforeP {
		t.Fatalf("the edge pinning the old key applied a table signed by the new one: revision %d, was %d", got, beforeP)
	}

	// Restarted without its keys file, the edge renews to fetch them.
	if err := os.Remove(keysFile); err != nil {
		t.Fatal(err)
	}
	n2, err := joinedEdge(t, m, "edge-k", "", dir)
	if err != nil {
		t.Fatalf("restart without the keys file: %v", err)
	}
	if !slices.Equal(n2.id.tableTrust().Keys, []string{key.NextPublicKey}) {
		t.Fatalf("restart: keys %v", n2.id.tableTrust().Keys)
	}
	if _, err := os.Stat(keysFile); err != nil {
		t.Fatal(err)
	}
}
