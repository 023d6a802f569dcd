package node

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/shared/table"
)

// TestSecretsNeverLeak runs the request paths that fail (bad and missing
// client keys, upstreams refusing the provider key, upstream errors,
// unreachable upstreams, broken bodies, unknown models, the route dry
// run) on an edge that holds known provider keys, client keys and gossip
// keys, then reads every answer, every log line, /metrics and every
// status endpoint: none of the secrets may appear in any of them.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		providerSecret = "sk-leakcheck-provider-5b1e9f3c7a2d"
		clientSecret   = "sk-leakcheck-client-8c4d2a6e0f1b"
		gossipSecret   = "bGVha2NoZWNrLWdvc3NpcC1rZXktMzJi" // 24 bytes, base64
	)
	secrets := []string{providerSecret, clientSecret, gossipSecret, mockKey}
	sum := sha256.Sum256([]byte(clientSecret))
	m := startMesh(t, func(c *config.Config) {
		c.Auth = config.AuthKeys
		c.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", Advertise: "127.0.0.1",
			Cluster: "meridian-test", Profile: "local", Keys: []table.Secret{table.Secret(gossipSecret)}}
		mock := c.Table.Providers[0]
		claude := c.Table.Providers[2]
		c.Table.Providers = append(c.Table.Providers,
			table.Provider{ID: "wrong-key", Kind: table.KindOpenAI, BaseURL: mock.BaseURL, APIKey: providerSecret},
			table.Provider{ID: "wrong-key-anth", Preset: "anthropic", BaseURL: claude.BaseURL, APIKey: providerSecret},
			table.Provider{ID: "unreachable", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1", APIKey: providerSecret, ConnectTimeout: time.Second})
		c.Table.Models = append(c.Table.Models, table.Model{ID: "leak-openai"}, table.Model{ID: "leak-anth"}, table.Model{ID: "leak-down"})
		c.Table.Routes = append(c.Table.Routes,
			&table.Route{Model: "leak-openai", Targets: []table.Target{{Provider: "wrong-key"}}},
			&table.Route{Model: "leak-anth", Targets: []table.Target{{Provider: "wrong-key-anth", Model: "claude-sonnet-4-5"}}},
			&table.Route{Model: "leak-down", Targets: []table.Target{{Provider: "unreachable"}}})
		c.Table.Keys = []*table.Key{{ID: "leak-client", Hash: "sha256:" + hex.EncodeToString(sum[:])}}
	})

	var seen strings.Builder
	record := func(what string, resp *http.Response) {
		t.Helper()
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen.WriteString(what + " " + resp.Status + "\n")
		for k, vs := range resp.Header {
			seen.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
		}
		seen.Write(b)
		seen.WriteString("\n")
	}
	anth := func(key string) []string {
		return []string{"anthropic-version", "2023-06-01", "x-api-key", key}
	}
	bearer := func(key string) []string { return []string{"Authorization", "Bearer " + key} }
	messages := func(model, extra string) string {
		return `{"model":"` + model + `","max_tokens":16,` + extra + `"messages":[{"role":"user","content":"hi"}]}`
	}
	for _, tc := range []struct {
		name, path, body string
		hdr              []string
	}{
		{"wrong client key, openai", "/v1/chat/completions", chatBody("gpt-4o-mini", "hi", ""), bearer(clientSecret + "x")},
		{"wrong client key, anthropic", "/v1/messages", messages("claude-mock", ""), anth(clientSecret[:20])},
		{"no client key", "/v1/chat/completions", chatBody("gpt-4o-mini", "hi", ""), nil},
		{"provider refuses its key, openai", "/v1/chat/completions", chatBody("leak-openai", "hi", ""), bearer(clientSecret)},
		{"provider refuses its key, stream", "/v1/chat/completions", chatBody("leak-openai", "hi", `"stream":true`), bearer(clientSecret)},
		{"provider refuses its key, anthropic", "/v1/messages", messages("leak-anth", ""), anth(clientSecret)},
		{"provider refuses its key, anthropic stream", "/v1/messages", messages("leak-anth", `"stream":true,`), anth(clientSecret)},
		{"unreachable provider", "/v1/chat/completions", chatBody("leak-down", "hi", ""), bearer(clientSecret)},
		{"upstream 500", "/v1/chat/completions", chatBody("mock-error-500", "hi #mock status=500", ""), bearer(clientSecret)},
		{"anthropic good request", "/v1/messages", messages("claude-mock", ""), anth(clientSecret)},
		{"stream cut", "/v1/chat/completions", chatBody("gpt-4o-mini", "hi #mock chunks=5 cut_after=2", `"stream":true`), bearer(clientSecret)},
		{"unknown model", "/v1/messages", messages("no-such-"+clientSecret, ""), anth(clientSecret)},
		{"broken body", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[` + clientSecret, bearer(clientSecret)},
		{"good request", "/v1/chat/completions", chatBody("gpt-4o-mini", "hi", ""), bearer(clientSecret)},
	} {
		record(tc.name, m.post(tc.path, tc.body, tc.hdr...))
	}
	for _, path := range []string{"/metrics", "/readyz", "/healthz", "/v1/meridian/members", "/v1/meridian/links",
		"/v1/meridian/route?model=leak-openai", "/v1/meridian/route?model=leak-down"} {
		req, _ := http.NewRequest(http.MethodGet, m.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+clientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		record(path, resp)
	}
	for _, path := range []string{"/v1/models", "/v1/models/leak-openai"} {
		record(path, m.get(path, bearer(clientSecret)...))
	}
	seen.WriteString(m.logs.String())
	out := seen.String()
	for _, s := range secrets {
		// The unknown model and the broken body echo what the client
		// sent; a client's own bytes are not the edge's secret to keep.
		out := strings.ReplaceAll(out, "no-such-"+clientSecret, "no-such-…")
		out = strings.ReplaceAll(out, `"messages":[`+clientSecret, `"messages":[…`)
		if i := strings.Index(out, s); i >= 0 {
			lo, hi := max(0, i-200), min(len(out), i+len(s)+100)
			t.Errorf("secret %.12s… leaked:\n%s", s, out[lo:hi])
		}
	}
	// The paths ran: the provider's refusal and the unreachable upstream
	// were logged, so the check read real failures.
	for _, want := range []string{`"target":"provider/wrong-key"`, `"target":"provider/unreachable"`, `"status":"401"`} {
		if !strings.Contains(m.logs.String(), want) {
			t.Errorf("the logs show no %s: the path did not run", want)
		}
	}
}

func (m *testMesh) get(path string, hdr ...string) *http.Response {
	m.t.Helper()
	req, err := http.NewRequest(http.MethodGet, m.url+path, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	return resp
}
