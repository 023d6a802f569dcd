package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// testMesh is one edge in front of one mock provider, both on loopback.
type testMesh struct {
	t       testing.TB
	mock    *providermock.Server
	node    *Node
	url     string // the edge's base URL, without /v1
	logs    *syncBuffer
	stop    context.CancelFunc
	stopped chan error
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

const mockKey = "sk-mock-provider-secret-0123456789"

// startMesh starts a mock provider and an edge whose static table routes:
//   - gpt-4o-mini and text-embedding-3-small to the mock;
//   - renamed to the mock's gpt-4o (checks the upstream model name);
//   - fallback to a dead port first, then the mock.
func startMesh(t testing.TB, edit func(*config.Config)) *testMesh {
	t.Helper()
	return newMesh(t, edit, true)
}

// startMeshUnready is startMesh for an edge that is not expected to
// become ready: it waits for /healthz only.
func startMeshUnready(t testing.TB, edit func(*config.Config)) *testMesh {
	t.Helper()
	return newMesh(t, edit, false)
}

func newMesh(t testing.TB, edit func(*config.Config), waitReady bool) *testMesh {
	t.Helper()
	mcfg := providermock.DefaultConfig()
	mcfg.APIKey = mockKey
	mock, err := providermock.New(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	base, err := mock.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mock.Close() })

	// One mock per other wire format, for the cross-format matrix.
	others := map[string]string{}
	for _, kind := range []string{providermock.KindAnthropic, providermock.KindGemini, providermock.KindOllama} {
		kcfg := providermock.DefaultConfig()
		kcfg.Kind, kcfg.APIKey = kind, mockKey
		if kind == providermock.KindOllama {
			kcfg.APIKey = ""
		}
		km, err := providermock.New(kcfg)
		if err != nil {
			t.Fatal(err)
		}
		kbase, err := km.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { km.Close() })
		others[kind] = kbase
	}

	cloud := startCloudMocks(t)

	cfg := config.DefaultConfig()
	cfg.NodeID = "edge-test"
	cfg.Listen = "127.0.0.1:0"
	cfg.StreamKeepAlive = 50 * time.Millisecond
	cfg.DrainTimeout = 5 * time.Second
	cfg.Table = table.Table{
		Providers: []table.Provider{
			{ID: "mock", Kind: table.KindOpenAI, BaseURL: base + "/v1", APIKey: mockKey, ChunkTimeout: 2 * time.Second},
			{ID: "dead", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1", ConnectTimeout: time.Second},
			{ID: "claude", Preset: "anthropic", BaseURL: others[providermock.KindAnthropic] + "/v1", APIKey: mockKey},
			{ID: "gemini", Preset: "gemini", BaseURL: others[providermock.KindGemini] + "/v1beta", APIKey: mockKey},
			{ID: "ollama", Preset: "ollama", BaseURL: others[providermock.KindOllama]},
			{ID: "azure", Preset: "azure", BaseURL: cloud.azure, APIKey: mockKey},
			{ID: "bedrock", Preset: "bedrock", BaseURL: cloud.bedrock, Region: "us", CloudRegion: cloudAWS.Region},
			{ID: "vertex", Preset: "vertex", BaseURL: cloud.vertex, Region: "us", CloudRegion: "us-central1", Project: "mock-project",
				APIKey: table.Secret(cloud.credentials)},
		},
		Regions: []table.Region{{ID: "us", Latitude: 39, Longitude: -77}},
		Models: []table.Model{{ID: "gpt-4o-mini"}, {ID: "text-embedding-3-small"}, {ID: "renamed"}, {ID: "fallback"}, {ID: "mock-error-500"}, {ID: "mock-error-429"},
			{ID: "claude-mock"}, {ID: "gemini-mock"}, {ID: "llama-mock"}, {ID: "llama-embed"},
			{ID: "azure-mock"}, {ID: "bedrock-mock"}, {ID: "vertex-gemini-mock"}, {ID: "vertex-claude-mock"},
			{ID: "text-only", Capabilities: []string{table.CapTools}}},
		Routes: []*table.Route{
			{Model: "gpt-4o-mini", Targets: []table.Target{{Provider: "mock"}}},
			{Model: "text-embedding-3-small", Targets: []table.Target{{Provider: "mock"}}},
			{Model: "renamed", Targets: []table.Target{{Provider: "mock", Model: "gpt-4o"}}},
			{Model: "fallback", Targets: []table.Target{{Provider: "dead"}, {Provider: "mock", Model: "gpt-4o-mini"}}},
			{Model: "mock-error-500", Targets: []table.Target{{Provider: "mock"}}},
			{Model: "mock-error-429", Targets: []table.Target{{Provider: "mock"}}},
			{Model: "claude-mock", Targets: []table.Target{{Provider: "claude", Model: "claude-sonnet-4-5"}}},
			{Model: "gemini-mock", Targets: []table.Target{{Provider: "gemini", Model: "gemini-2.5-flash"}}},
			{Model: "llama-mock", Targets: []table.Target{{Provider: "ollama", Model: "llama3.2:1b"}}},
			{Model: "llama-embed", Targets: []table.Target{{Provider: "ollama", Model: "nomic-embed-text"}}},
			{Model: "text-only", Targets: []table.Target{{Provider: "claude", Model: "claude-haiku"}}},
			{Model: "azure-mock", Targets: []table.Target{{Provider: "azure", Model: "gpt-4o-deployment"}}},
			{Model: "bedrock-mock", Targets: []table.Target{{Provider: "bedrock", Model: "anthropic.claude-3-5-haiku-20241022-v1:0"}}},
			{Model: "vertex-gemini-mock", Targets: []table.Target{{Provider: "vertex", Model: "gemini-2.5-flash"}}},
			{Model: "vertex-claude-mock", Targets: []table.Target{{Provider: "vertex", Model: "claude-sonnet-4@20250514"}}},
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	logs := &syncBuffer{}
	n, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &testMesh{t: t, mock: mock, node: n, url: "http://" + n.Addr().String(), logs: logs, stop: cancel, stopped: make(chan error, 1)}
	go func() { m.stopped <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-m.stopped:
		case <-time.After(10 * time.Second):
			t.Error("edge did not stop")
		}
	})
	probe := "/readyz"
	if !waitReady {
		probe = "/healthz"
	}
	m.waitFor("edge "+probe, func() bool {
		resp, err := http.Get(m.url + probe)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return m
}

// waitFor polls cond until it holds or 60s pass (a local engine loads
// its models first).
func (m *testMesh) waitFor(what string, cond func() bool) {
	m.t.Helper()
	wait.For(m.t, 60*time.Second, what, cond)
}

func (m *testMesh) post(path, body string, hdr ...string) *http.Response {
	m.t.Helper()
	req, err := http.NewRequest(http.MethodPost, m.url+path, strings.NewReader(body))
	if err != nil {
		m.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// apiError is OpenAI's error body.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func decodeError(t *testing.T, b []byte) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error body: %s (%v)", b, err)
	}
	return e
}

// sseEvent is one event read from the edge: data, or a comment.
type sseEvent struct {
	comment bool
	data    string
}

// readEvents reads raw SSE until the body ends, keeping comments, so tests
// see exactly what a client sees. err is the body's terminal error, if any.
func readEvents(t *testing.T, r io.Reader) (events []sseEvent, err error) {
	t.Helper()
	br := bufio.NewReader(r)
	var data []string
	for {
		line, rerr := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		switch {
		case rerr != nil:
			if errors.Is(rerr, io.EOF) {
				rerr = nil
			}
			return events, rerr
		case line == "":
			if data != nil {
				events = append(events, sseEvent{data: strings.Join(data, "\n")})
				data = nil
			}
		case strings.HasPrefix(line, ":"):
			events = append(events, sseEvent{comment: true, data: line})
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

// dataEvents drops comments.
func dataEvents(evs []sseEvent) []string {
	var out []string
	for _, e := range evs {
		if !e.comment {
			out = append(out, e.data)
		}
	}
	return out
}

func chatBody(model, content string, extra string) string {
	b, _ := json.Marshal(content)
	s := `{"model":"` + model + `","messages":[{"role":"user","content":` + string(b) + `}]`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}
