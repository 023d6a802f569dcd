package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/edge/config"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

const clientKey = "sk-client-auth-test-0123456789"

func clientKeyHash() string {
	sum := sha256.Sum256([]byte(clientKey))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// call sends one request to the edge, in Anthropic's format when anth is
// set, and returns the status and body.
func (m *testMesh) call(method, path, body, key string, anth bool) (int, []byte) {
	m.t.Helper()
	req, err := http.NewRequest(method, m.url+path, strings.NewReader(body))
	if err != nil {
		m.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		if anth {
			req.Header.Set("X-Api-Key", key)
		} else {
			req.Header.Set("Authorization", "Bearer "+key)
		}
	}
	if anth {
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readBody(m.t.(*testing.T), resp)
}

// surfaces are the requests each test makes: chat and the model list,
// in both clients' formats.
var surfaces = []struct {
	name, method, path, body string
	anth                     bool
}{
	{"openai chat", http.MethodPost, "/v1/chat/completions", `{"model":"ctl-model","messages":[{"role":"user","content":"hi"}]}`, false},
	{"openai models", http.MethodGet, "/v1/models", "", false},
	{"anthropic messages", http.MethodPost, "/v1/messages", `{"model":"ctl-model","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, true},
	{"anthropic models", http.MethodGet, "/v1/models", "", true},
}

// assertClosed checks that every surface refuses a request with 401, in
// the client's own format, with or without the key that used to work,
// saying the edge has no keys; and that /readyz says why it is not ready.
func assertClosed(t *testing.T, m *testMesh) {
	t.Helper()
	for _, s := range surfaces {
		for _, key := range []string{"", clientKey} {
			status, b := m.call(s.method, s.path, s.body, key, s.anth)
			if status != http.StatusUnauthorized {
				t.Fatalf("%s, key %q: status %d, want 401: %s", s.name, key, status, b)
			}
			if s.anth {
				var e struct {
					Type  string `json:"type"`
					Error struct{ Type, Message string }
				}
				if err := json.Unmarshal(b, &e); err != nil || e.Type != "error" || e.Error.Type != "authentication_error" {
					t.Fatalf("%s: not Anthropic's authentication_error: %s", s.name, b)
				}
				if !strings.Contains(e.Error.Message, "no keys to accept") {
					t.Fatalf("%s: message does not say the edge has no keys: %s", s.name, b)
				}
				continue
			}
			e := decodeError(t, b)
			if e.Error.Code == nil || *e.Error.Code != "invalid_api_key" || !strings.Contains(e.Error.Message, "no keys to accept") {
				t.Fatalf("%s: want invalid_api_key saying the edge has no keys: %s", s.name, b)
			}
		}
	}
	resp, body := get(t, m.url+"/readyz")
	var rd Readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || rd.Ready || rd.Reason != "auth: keys mode but the routing table has no keys" {
		t.Fatalf("readyz: %d %s", resp.StatusCode, body)
	}
}

// An edge following a control plane requires keys by default. Deleting
// the fleet's last key closes it on every surface; it does not open.
func TestDeletingLastKeyKeepsEdgeClosed(t *testing.T) {
	t.Setenv("MERIDIAN_SECRET_TEST_MOCK_KEY", mockKey)
	fc := startFakeControl(t)
	m := startMesh(t, func(c *config.Config) {
		fc.write(t,
			fsm.PutOp(&controlv1.Provider{Id: "ctl-mock", Kind: "openai", BaseUrl: c.Table.Providers[0].BaseURL, SecretRef: "env:MERIDIAN_SECRET_TEST_MOCK_KEY"}),
			fsm.PutOp(&controlv1.Model{Id: "ctl-model"}),
			fsm.PutOp(&controlv1.Route{Model: "ctl-model", Targets: []*controlv1.Target{{Provider: "ctl-mock", Model: "gpt-4o-mini"}}}),
			fsm.PutOp(&controlv1.Key{Id: "only-key", Hash: clientKeyHash()}))
		c.Control.NATSURLs, c.Control.Token, c.Control.TablePublicKey = []string{fc.url}, testNATSToken, fc.key
		c.Control.TableCache = filepath.Join(t.TempDir(), "table.pb")
	})
	// startMesh waited for /readyz: the key arrived.
	for _, s := range surfaces {
		if status, b := m.call(s.method, s.path, s.body, clientKey, s.anth); status != 200 {
			t.Fatalf("%s with the key: %d %s", s.name, status, b)
		}
		if status, b := m.call(s.method, s.path, s.body, "", s.anth); status != 401 {
			t.Fatalf("%s without a key: %d %s", s.name, status, b)
		}
	}

	rev := fc.write(t, fsm.DeleteOp(fsm.KindKey, "only-key"))
	m.waitFor("the table without keys", func() bool { return m.node.Gateway().Table().Revision() == rev })
	assertClosed(t, m)
	if !strings.Contains(m.logs.String(), "auth: keys mode but the routing table has no keys") {
		t.Fatal("no warning in the log when the last key went")
	}

	// A new key opens it again, to that key only.
	fc.write(t, fsm.PutOp(&controlv1.Key{Id: "new-key", Hash: clientKeyHash()}))
	m.waitFor("the new key", func() bool {
		status, _ := m.call(http.MethodGet, "/v1/models", "", clientKey, false)
		return status == 200
	})
	if status, b := m.call(http.MethodGet, "/readyz", "", "", false); status != 200 {
		t.Fatalf("readyz with a key again: %d %s", status, b)
	}
}

// A standalone edge whose static table lists keys requires them; a table
// without keys applied to it later closes it rather than opening it.
func TestKeylessTableKeepsEdgeClosed(t *testing.T) {
	m := startMesh(t, func(c *config.Config) {
		c.Table.Models = append(c.Table.Models, table.Model{ID: "ctl-model"})
		c.Table.Routes = append(c.Table.Routes, &table.Route{Model: "ctl-model", Targets: []table.Target{{Provider: "mock", Model: "gpt-4o-mini"}}})
		c.Table.Keys = []*table.Key{{ID: "static-key", Hash: clientKeyHash()}}
	})
	if status, b := m.call(http.MethodGet, "/v1/models", "", clientKey, false); status != 200 {
		t.Fatalf("with the key: %d %s", status, b)
	}
	keyless := m.node.cfg.Table
	keyless.Revision, keyless.Keys = 7, nil
	keyless.Providers = slices.Clone(keyless.Providers) // Compile fills presets in place
	if err := m.node.applyTable(&keyless); err != nil {
		t.Fatal(err)
	}
	assertClosed(t, m)
}

// auth: none, written, accepts requests without a key even from an edge
// following a control plane, and says so loudly at start and in /readyz.
func TestAuthNoneAcceptsWithoutKey(t *testing.T) {
	t.Setenv("MERIDIAN_SECRET_TEST_MOCK_KEY", mockKey)
	fc := startFakeControl(t)
	m := startMesh(t, func(c *config.Config) {
		fc.write(t,
			fsm.PutOp(&controlv1.Provider{Id: "ctl-mock", Kind: "openai", BaseUrl: c.Table.Providers[0].BaseURL, SecretRef: "env:MERIDIAN_SECRET_TEST_MOCK_KEY"}),
			fsm.PutOp(&controlv1.Model{Id: "ctl-model"}),
			fsm.PutOp(&controlv1.Route{Model: "ctl-model", Targets: []*controlv1.Target{{Provider: "ctl-mock", Model: "gpt-4o-mini"}}}))
		c.Control.NATSURLs, c.Control.Token, c.Control.TablePublicKey = []string{fc.url}, testNATSToken, fc.key
		c.Control.TableCache = filepath.Join(t.TempDir(), "table.pb")
		c.Auth = config.AuthNone
	})
	m.waitFor("the control plane's table", func() bool { return m.node.Gateway().Table().Revision() > 0 })
	for _, s := range surfaces {
		for _, key := range []string{"", "sk-anything"} {
			if status, b := m.call(s.method, s.path, s.body, key, s.anth); status != 200 {
				t.Fatalf("%s, key %q: %d %s", s.name, key, status, b)
			}
		}
	}
	resp, body := get(t, m.url+"/readyz")
	var rd Readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil || resp.StatusCode != 200 || rd.Auth != config.AuthNone {
		t.Fatalf("readyz: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(m.logs.String(), `"level":"WARN","msg":"auth: none (set in the config)`) {
		t.Fatalf("no warning that auth is off:\n%s", m.logs.String())
	}
}

// A standalone edge with no keys at all is open, as the quick start
// needs, and warns that it is.
func TestStandaloneWithoutKeysWarns(t *testing.T) {
	m := startMesh(t, nil)
	if status, b := m.call(http.MethodGet, "/v1/models", "", "", false); status != 200 {
		t.Fatalf("/v1/models: %d %s", status, b)
	}
	if !strings.Contains(m.logs.String(), `"level":"WARN","msg":"auth: none: this edge accepts every request without an API key`) {
		t.Fatalf("no warning that auth is off:\n%s", m.logs.String())
	}
	_, body := get(t, m.url+"/readyz")
	if !strings.Contains(body, `"auth":"none"`) {
		t.Fatalf("readyz: %s", body)
	}
}
