package api_test

import (
	"context"
	"crypto"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

func jsonBody(t *testing.T, v any) *strings.Reader {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReader(string(b))
}

func TestJoinTokenOnceRenewAndRevoke(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 3, controltest.Options{KEK: kek})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := c.Followers()[0]
	do := func(method, path, token string, body any) (int, []byte) {
		t.Helper()
		r := strings.NewReader("")
		if body != nil {
			r = jsonBody(t, body)
		}
		st, b, _, err := f.Do(ctx, method, path, token, r)
		if err != nil {
			t.Fatal(err)
		}
		return st, b
	}
	if st, b := do("PUT", "/v1/control/regions/eu", controltest.AdminToken, map[string]any{"id": "eu", "latitude": 50, "longitude": 8}); st != 200 {
		t.Fatalf("put region: %d %s", st, b)
	}
	if st, _ := do("POST", "/v1/control/identity/tokens", controltest.ReadToken, api.TokenRequest{Node: "edge-1", Region: "eu"}); st != http.StatusForbidden {
		t.Fatalf("read token created a join token: %d", st)
	}
	token := func(node string, ttl int64) string {
		st, b := do("POST", "/v1/control/identity/tokens", controltest.AdminToken, api.TokenRequest{Node: node, Region: "eu", TTLSeconds: ttl})
		if st != http.StatusCreated {
			t.Fatalf("create token: %d %s", st, b)
		}
		var tr api.TokenResponse
		json.Unmarshal(b, &tr)
		return tr.Token
	}
	tok := token("edge-1", 0)
	key, csr, err := pki.NewKeyCSR("whatever-the-csr-says")
	if err != nil {
		t.Fatal(err)
	}
	nk, _ := nkeys.CreateUser()
	pub, _ := nk.PublicKey()
	join := api.NodeJoinRequest{Token: tok, CSR: string(csr), NATSKey: pub}
	st, b := do("POST", "/v1/control/identity/join", "", join)
	if st != 200 {
		t.Fatalf("join: %d %s", st, b)
	}
	var cred api.Credentials
	json.Unmarshal(b, &cred)
	cert, err := pki.ParseCertPEM([]byte(cred.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCertPEM([]byte(cred.CA))
	if err != nil {
		t.Fatal(err)
	}
	pool := pki.PoolOf(ca)
	if id, err := pki.VerifyNode(pki.Chain(cert), pool, time.Now()); err != nil || id != "edge-1" {
		t.Fatalf("issued certificate names %q (%v); the token's node is edge-1", id, err)
	}
	if life := cert.NotAfter.Sub(time.Now()); life > 13*time.Hour || life < 11*time.Hour {
		t.Fatalf("certificate lives %s, want about 12h", life)
	}
	// The answer carries what the edge would otherwise pin.
	_, kb := do("GET", "/v1/control/table-key", controltest.ReadToken, nil)
	var tk api.TableKey
	json.Unmarshal(kb, &tk)
	if tk.PublicKey == "" || cred.ClusterID != tk.ClusterID || len(cred.TablePublicKeys) != 1 || cred.TablePublicKeys[0] != tk.PublicKey {
		t.Fatalf("join delivered cluster %q keys %v; the cluster's key is %+v", cred.ClusterID, cred.TablePublicKeys, tk)
	}

	// A token works once.
	_, csr2, _ := pki.NewKeyCSR("edge-1")
	join.CSR = string(csr2)
	if st, b := do("POST", "/v1/control/identity/join", "", join); st != http.StatusConflict || !strings.Contains(string(b), "already used") {
		t.Fatalf("second use of a join token: %d %s", st, b)
	}
	// An expired one never.
	exp := token("edge-2", 1)
	time.Sleep(1100 * time.Millisecond)
	if st, b := do("POST", "/v1/control/identity/join", "", api.NodeJoinRequest{Token: exp, CSR: string(csr2), NATSKey: pub}); st != http.StatusUnauthorized || !strings.Contains(string(b), "expired") {
		t.Fatalf("expired join token: %d %s", st, b)
	}
	if st, _ := do("POST", "/v1/control/identity/join", "", api.NodeJoinRequest{Token: "mjt_guess", CSR: string(csr2), NATSKey: pub}); st != http.StatusUnauthorized {
		t.Fatalf("unknown join token: %d", st)
	}

	// Renewal: a request signed with the current key.
	renew := func(k crypto.Signer, certPEM string) (int, []byte) {
		r, err := pki.CSR(k, "edge-1")
		if err != nil {
			t.Fatal(err)
		}
		return do("POST", "/v1/control/identity/renew", "", api.RenewRequest{Certificate: certPEM, CSR: string(r)})
	}
	// A staged table key comes with the next renewal, after the current one.
	if st, b := do("POST", "/v1/control/table-key/stage", controltest.AdminToken, nil); st != 200 {
		t.Fatalf("stage a table key: %d %s", st, b)
	} else {
		json.Unmarshal(b, &tk)
	}
	wait.For(t, 5*time.Second, "the staged key on the follower", func() bool {
		return f.Node.FSM().State().Identity().GetNextPublicKey() != nil
	})
	st, b = renew(key, cred.Certificate)
	if st != 200 {
		t.Fatalf("renew: %d %s", st, b)
	}
	var renewed api.Credentials
	json.Unmarshal(b, &renewed)
	if want := []string{tk.PublicKey, tk.NextPublicKey}; tk.NextPublicKey == "" || renewed.ClusterID != tk.ClusterID || !slices.Equal(renewed.TablePublicKeys, want) {
		t.Fatalf("renewal delivered cluster %q keys %v, want %v", renewed.ClusterID, renewed.TablePublicKeys, want)
	}
	other, _, _ := pki.NewKeyCSR("edge-1")
	if st, _ := renew(other, cred.Certificate); st != http.StatusUnauthorized {
		t.Fatalf("renewal signed by another key: %d", st)
	}

	if st, b := do("POST", "/v1/control/identity/revoke/edge-1", controltest.AdminToken, nil); st != 200 {
		t.Fatalf("revoke: %d %s", st, b)
	}
	wait.For(t, 5*time.Second, "the revocation on the follower", func() bool {
		return f.Node.FSM().State().Revoked("edge-1")
	})
	if st, b := renew(key, cred.Certificate); st != http.StatusUnauthorized || !strings.Contains(string(b), "revoked") {
		t.Fatalf("renewal after revocation: %d %s", st, b)
	}
	// The CA key is sealed in the replicated state, never in the clear.
	caRec, _ := f.Node.FSM().State().ClusterCA()
	if _, err := kek.Open(caRec.GetSealedKey(), seal.AADClusterCAKey); err != nil {
		t.Fatalf("the CA key does not open with the KEK: %v", err)
	}
}

// Guessing join tokens writes nothing to the Raft log.
func TestUnknownJoinTokenCostsNoRaftWrite(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 1, controltest.Options{KEK: kek})
	m := c.Leader()
	// The first leader writes the cluster identity on its own; measure
	// from after that write.
	wait.For(t, 10*time.Second, "the cluster identity", func() bool { return m.Node.FSM().State().Identity() != nil })
	_, csr, _ := pki.NewKeyCSR("x")
	nk, _ := nkeys.CreateUser()
	pub, _ := nk.PublicKey()
	before := m.Node.Stats().LastIndex
	for range 20 {
		st, b, _, err := m.Do(context.Background(), "POST", "/v1/control/identity/join", "",
			jsonBody(t, api.NodeJoinRequest{Token: "mjt_guess", CSR: string(csr), NATSKey: pub}))
		if err != nil || st != http.StatusUnauthorized {
			t.Fatalf("guessed token: %d %s %v", st, b, err)
		}
	}
	if after := m.Node.Stats().LastIndex; after != before {
		t.Fatalf("20 guessed tokens moved the Raft log from index %d to %d", before, after)
	}
}
