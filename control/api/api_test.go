package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
)

type apiError struct {
	Error struct{ Code, Message, Field string }
}

func decodeErr(t *testing.T, b []byte) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("not an error body: %s", b)
	}
	return e
}

func TestAPIValidationAuthAndForwarding(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := c.Followers()[0]
	do := func(method, path, token, body string, hdr ...string) (int, []byte, http.Header) {
		t.Helper()
		var r *strings.Reader
		if body != "" {
			r = strings.NewReader(body)
		} else {
			r = strings.NewReader("")
		}
		st, b, h, err := f.Do(ctx, method, path, token, r, hdr...)
		if err != nil {
			t.Fatal(err)
		}
		return st, b, h
	}
	admin, read := controltest.AdminToken, controltest.ReadToken

	// Writes on a follower are forwarded to the leader.
	if st, b, _ := do("PUT", "/v1/control/regions/eu", admin, `{"id":"eu","name":"Europe","latitude":50.1,"longitude":8.7}`); st != 200 {
		t.Fatalf("put region via follower: %d %s", st, b)
	}
	if st, b, _ := do("POST", "/v1/control/tenants", admin, `{"id":"acme","monthly_budget":100}`); st != 201 {
		t.Fatalf("create tenant: %d %s", st, b)
	}
	key := `{"id":"k1","hash":"sha256:` + strings.Repeat("ab", 32) + `","tenant":"acme"}`
	if st, b, _ := do("PUT", "/v1/control/keys/k1", admin, key); st != 200 {
		t.Fatalf("put key: %d %s", st, b)
	}
	// ... and readable, consistently, from the same follower at once.
	st, b, h := do("GET", "/v1/control/regions/eu?consistent", read, "")
	if st != 200 || !strings.Contains(string(b), `"latitude":50.1`) || h.Get(api.HeaderIndex) == "" {
		t.Fatalf("consistent read on follower: %d %s %v", st, b, h)
	}

	cases := []struct {
		name, method, path, token, body string
		status                          int
		code, field                     string
	}{
		{"no token", "GET", "/v1/control/regions", "", "", 401, api.CodeUnauthorized, ""},
		{"wrong token", "GET", "/v1/control/regions", "nope-nope-nope-nope", "", 401, api.CodeUnauthorized, ""},
		{"read-only write", "PUT", "/v1/control/regions/us", read, `{"id":"us"}`, 403, api.CodeForbidden, ""},
		{"unknown field", "PUT", "/v1/control/regions/us", admin, `{"id":"us","lattitude":1}`, 400, fsm.CodeInvalid, "lattitude"},
		{"latitude 200", "PUT", "/v1/control/regions/us", admin, `{"id":"us","latitude":200}`, 400, fsm.CodeInvalid, "latitude"},
		{"wrong type", "PUT", "/v1/control/regions/us", admin, `{"id":"us","latitude":"north"}`, 400, fsm.CodeInvalid, "latitude"},
		{"dangling region", "PUT", "/v1/control/nodes/n1", admin, `{"id":"n1","region":"mars"}`, 400, fsm.CodeReference, "region"},
		{"duplicate key", "PUT", "/v1/control/keys/k2", admin, strings.Replace(key, "k1", "k2", 1), 409, fsm.CodeConflict, "hash"},
		{"create existing", "POST", "/v1/control/regions", admin, `{"id":"eu"}`, 409, fsm.CodeConflict, "id"},
		{"delete referenced", "DELETE", "/v1/control/tenants/acme", admin, "", 409, fsm.CodeConflict, "id"},
		{"path mismatch", "PUT", "/v1/control/regions/us", admin, `{"id":"eu"}`, 400, fsm.CodeInvalid, "id"},
		{"unknown kind", "GET", "/v1/control/planets", read, "", 404, fsm.CodeNotFound, "kind"},
		{"missing", "GET", "/v1/control/regions/nowhere", read, "", 404, fsm.CodeNotFound, "id"},
		{"body too large", "PUT", "/v1/control/regions/us", admin, `{"id":"us","name":"` + strings.Repeat("x", 2<<20) + `"}`, 413, api.CodeTooLarge, ""},
		{"secret as ref", "PUT", "/v1/control/providers/p", admin, `{"id":"p","preset":"openai","secret_ref":"sk-live-123"}`, 400, fsm.CodeInvalid, "secret_ref"},
		{"ref to a system file", "PUT", "/v1/control/providers/p", admin, `{"id":"p","preset":"openai","secret_ref":"file:/etc/passwd"}`, 400, fsm.CodeInvalid, "secret_ref"},
		{"ref to any env var", "PUT", "/v1/control/providers/p", admin, `{"id":"p","preset":"openai","secret_ref":"env:HOME"}`, 400, fsm.CodeInvalid, "secret_ref"},
		{"ref out by traversal", "POST", "/v1/control/batch", admin, `{"put":[{"kind":"provider","entity":{"id":"p","preset":"openai","secret_ref":"file:/etc/meridian/secrets/../../shadow"}}]}`, 400, fsm.CodeInvalid, "secret_ref"},
		{"batch dangling", "POST", "/v1/control/batch", admin, `{"put":[{"kind":"node","entity":{"id":"n9","region":"nowhere"}}]}`, 400, fsm.CodeReference, "region"},
		{"batch flat dangling", "POST", "/v1/control/batch", admin, `{"put":[{"kind":"node","id":"n9","region":"nowhere"}]}`, 400, fsm.CodeReference, "region"},
		{"batch bad entity field", "POST", "/v1/control/batch", admin, `{"put":[{"kind":"region","entity":{"id":"x","latitude":200}}]}`, 400, fsm.CodeInvalid, "put[0].entity.latitude"},
		{"batch field beside entity", "POST", "/v1/control/batch", admin, `{"put":[{"kind":"region","id":"x","entity":{"id":"x"}}]}`, 400, fsm.CodeInvalid, "put[0].id"},
		{"batch entity not an object", "POST", "/v1/control/batch", admin, `{"put":[{"kind":"region","entity":["x"]}]}`, 400, fsm.CodeInvalid, "put[0].entity"},
		{"batch no kind", "POST", "/v1/control/batch", admin, `{"put":[{"entity":{"id":"x"}}]}`, 400, fsm.CodeInvalid, "put[0].kind"},
		{"batch wire format as kind", "POST", "/v1/control/batch", admin, `{"put":[{"kind":"openai","id":"p","base_url":"http://h/v1"}]}`, 400, fsm.CodeInvalid, "put[0].kind"},
	}
	for _, tc := range cases {
		st, b, _ := do(tc.method, tc.path, tc.token, tc.body)
		if st != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, st, tc.status, b)
			continue
		}
		e := decodeErr(t, b)
		if e.Error.Code != tc.code || e.Error.Field != tc.field {
			t.Errorf("%s: code %q field %q (%s), want %q %q", tc.name, e.Error.Code, e.Error.Field, e.Error.Message, tc.code, tc.field)
		}
		if strings.Contains(string(b), "sk-live-123") {
			t.Errorf("%s: the error body echoes a secret", tc.name)
		}
	}

	// A batch put carries its entity under "entity", so a provider's own
	// kind arrives (issue 23). The flat shape is still read, and the
	// answer says it is deprecated.
	st, b, h = do("POST", "/v1/control/batch", admin, `{"put":[{"kind":"provider","entity":{"id":"mock","kind":"openai","base_url":"http://127.0.0.1:9100/v1","secret_ref":"env:MERIDIAN_SECRET_MOCK_KEY"}}]}`)
	if st != 200 || h.Get(api.HeaderDeprecation) != "" {
		t.Fatalf("batch put of a provider with a kind: %d %s %v", st, b, h)
	}
	if st, b, _ := do("GET", "/v1/control/providers/mock?consistent", read, ""); st != 200 || !strings.Contains(string(b), `"kind":"openai"`) {
		t.Fatalf("provider after batch: %d %s", st, b)
	}
	st, b, h = do("POST", "/v1/control/batch", admin, `{"put":[{"kind":"provider","id":"flat","preset":"groq"}]}`)
	if st != 200 || h.Get(api.HeaderDeprecation) != "true" {
		t.Fatalf("flat batch put: %d %s %v", st, b, h)
	}
	if st, b, _ := do("POST", "/v1/control/batch", admin, `{"put":[{"kind":"openai","id":"p"}]}`); !strings.Contains(string(b), `{\"kind\": \"provider\", \"entity\"`) {
		t.Errorf("a wire format sent as the entity kind is not explained: %d %s", st, b)
	}

	// A retried write with the same request ID applies once.
	for range 2 {
		if st, b, _ := do("PUT", "/v1/control/regions/us", admin, `{"id":"us","name":"US"}`, api.HeaderRequestID, "retry-1"); st != 200 {
			t.Fatalf("retry: %d %s", st, b)
		}
	}
	c.WaitConverged()
	for _, m := range c.Members {
		if n := m.Applied()["retry-1"]; n != 1 {
			t.Errorf("%s applied retry-1 %d times", m.Name, n)
		}
	}

	// A blocking query returns when the state changes.
	_, _, h = do("GET", "/v1/control/regions", read, "")
	idx, _ := strconv.ParseUint(h.Get(api.HeaderIndex), 10, 64)
	done := make(chan []byte, 1)
	go func() {
		_, b, _ := do("GET", fmt.Sprintf("/v1/control/regions?index=%d&wait=30s", idx), read, "")
		done <- b
	}()
	select {
	case <-done:
		t.Fatal("a blocking query returned before any change")
	case <-time.After(100 * time.Millisecond):
	}
	if st, b, _ := do("PUT", "/v1/control/regions/ap", admin, `{"id":"ap"}`); st != 200 {
		t.Fatalf("put: %d %s", st, b)
	}
	select {
	case b := <-done:
		if !strings.Contains(string(b), `"ap"`) {
			t.Fatalf("blocking query woke without the change: %s", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking query did not wake")
	}
	// A blocking query with a short wait times out with the same index.
	start := time.Now()
	_, _, h = do("GET", fmt.Sprintf("/v1/control/regions?index=%d&wait=200ms", idx+1000), read, "")
	if time.Since(start) < 200*time.Millisecond || h.Get(api.HeaderIndex) == "" {
		t.Fatalf("short wait returned after %s", time.Since(start))
	}

	// Metrics and /self need a read token; health needs none.
	for _, path := range []string{"/metrics", "/v1/control/self"} {
		if st, b, _ = do("GET", path, "", ""); st != 401 {
			t.Fatalf("%s without a token: %d %s", path, st, b)
		}
	}
	if st, b, _ = do("GET", "/v1/control/health", "", ""); st != 200 || !strings.Contains(string(b), `"ok":true`) {
		t.Fatalf("health: %d %s", st, b)
	}
	// Metrics count forwarded writes.
	st, b, _ = do("GET", "/metrics", read, "")
	if st != 200 || !strings.Contains(string(b), `meridian_control_writes_total{outcome="forwarded"}`) || !strings.Contains(string(b), "meridian_control_raft_applied_index") {
		t.Fatalf("metrics: %d\n%s", st, b)
	}
	st, b, _, _ = c.Leader().Do(ctx, "GET", "/metrics", controltest.ReadToken, strings.NewReader(""))
	if st != 200 || !strings.Contains(string(b), `meridian_control_writes_total{outcome="ok"}`) || !strings.Contains(string(b), `meridian_control_raft_leader 1`) {
		t.Fatalf("leader metrics: %d\n%s", st, b)
	}

	// The cluster listing shows every voter, the leader and addresses.
	st, b, _ = do("GET", "/v1/control/cluster", read, "")
	var info api.ClusterInfo
	if err := json.Unmarshal(b, &info); st != 200 || err != nil || len(info.Servers) != 3 || info.LeaderID == "" {
		t.Fatalf("cluster: %d %s", st, b)
	}
}

func TestWriteHeldWithoutLeaderFailsWith503(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{})
	f := c.Followers()
	f[0].Kill()
	c.Leader().Kill()
	// One node of three left: no quorum, so no leader.
	alive := f[1]
	start := time.Now()
	st, b, _, err := alive.Do(context.Background(), "PUT", "/v1/control/regions/eu", controltest.AdminToken, bytes.NewReader([]byte(`{"id":"eu"}`)))
	if err != nil {
		t.Fatal(err)
	}
	if st != 503 {
		t.Fatalf("status %d: %s", st, b)
	}
	if e := decodeErr(t, b); e.Error.Code != api.CodeNoLeader && e.Error.Code != api.CodeUnknown {
		t.Fatalf("code %q", e.Error.Code)
	}
	if d := time.Since(start); d < 4*time.Second || d > 20*time.Second {
		t.Fatalf("held for %s, want about 5s", d)
	}
}

// FuzzDecodeEntity feeds arbitrary JSON to every kind's decoder: it
// either rejects the input with a field-level error or accepts an entity
// that survives a round trip and passes validation.
func FuzzDecodeEntity(f *testing.F) {
	f.Add(uint8(0), []byte(`{"id":"eu","latitude":50,"longitude":8}`))
	f.Add(uint8(1), []byte(`{"id":"n1","region":"eu","addresses":["10.0.0.1:80"],"labels":{"gpu":"a100"},"capacity":{"gpus":2}}`))
	f.Add(uint8(2), []byte(`{"id":"llama3","local":true,"ollama":"llama3.1:8b","capabilities":["tools"]}`))
	f.Add(uint8(4), []byte(`{"id":"p","preset":"openai","secret_ref":"env:MERIDIAN_SECRET_X"}`))
	f.Add(uint8(5), []byte(`{"model":"m","targets":[{"provider":"p"}],"max_price":1.5}`))
	f.Add(uint8(7), []byte(`{"id":"k","hash":"sha256:`+strings.Repeat("0", 64)+`"}`))
	f.Add(uint8(8), []byte(`{"model":"m","provider":"p","input":1,"output":2}`))
	f.Add(uint8(0), []byte(`{"id":"eu","latitude":"NaN"}`))
	f.Fuzz(func(t *testing.T, k uint8, body []byte) {
		kind := fsm.Kinds[int(k)%len(fsm.Kinds)]
		m, err := api.DecodeEntity(kind, body)
		if err != nil {
			if _, ok := err.(*fsm.Error); !ok {
				t.Fatalf("error is %T, not *fsm.Error: %v", err, err)
			}
			return
		}
		out, err := api.EncodeEntity(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := api.DecodeEntity(kind, out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		if kind.ID(m) != kind.ID(m2) {
			t.Fatal("round trip changed the ID")
		}
	})
}

// FuzzDecodeBatch feeds arbitrary batch bodies to the decoder: each is
// rejected with an *fsm.Error or yields ops that each carry a valid
// entity or a known kind to delete.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"put":[{"kind":"region","id":"eu","latitude":1}],"delete":[{"kind":"node","id":"n1"}]}`))
	f.Add([]byte(`{"put":[{"kind":"price","model":"m","provider":"p","input":1}]}`))
	f.Add([]byte(`{"put":[{"kind":"nope"}]}`))
	f.Add([]byte(`{"delete":[]}`))
	f.Add([]byte(`{"put":[{"kind":"provider","entity":{"id":"p","kind":"openai","base_url":"http://h/v1"}}]}`))
	f.Add([]byte(`{"put":[{"kind":"node","entity":{"id":"n","region":"r","labels":{"a":"b"}},"x":1}]}`))
	f.Add([]byte(`{"put":[{"kind":"routes","model":"m","targets":[{"provider":"p","weight":2}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ops, err := api.DecodeBatch(body)
		if err != nil {
			if _, ok := err.(*fsm.Error); !ok {
				t.Fatalf("error is %T: %v", err, err)
			}
			return
		}
		if len(ops) == 0 {
			t.Fatal("an empty batch was accepted")
		}
		for _, op := range ops {
			if op.GetKind() != "" {
				if _, ok := fsm.KindByName(op.GetKind()); !ok {
					t.Fatalf("delete of unknown kind %q accepted", op.GetKind())
				}
			}
		}
	})
}
