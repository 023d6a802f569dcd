package vertex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// setup starts a token server and a Vertex mock that trusts it, and an
// adapter whose credentials JSON points at the token server.
func setup(t *testing.T, ttl time.Duration) (*providermock.Server, *providermock.TokenServer, *Adapter) {
	t.Helper()
	ts, err := providermock.NewTokenServer()
	if err != nil {
		t.Fatal(err)
	}
	ts.TTL = ttl
	if _, err := ts.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	s, err := providermock.New(providermock.Config{Kind: providermock.KindVertex, Chunks: 3, Tokens: ts, Project: "mock-project", Location: "europe-west4"})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a, err := New(table.Provider{ID: "vx", Kind: table.KindVertex, BaseURL: base, Region: "eu", CloudRegion: "europe-west4",
		Project: "mock-project", APIKey: table.Secret(ts.CredentialsJSON())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return s, ts, a
}

func chatReq(model, text string, stream bool) *llm.Request {
	s := ""
	if stream {
		s = `"stream":true,`
	}
	return &llm.Request{ID: "r1", Op: llm.OpChat, Model: model, Stream: stream,
		Body: []byte(`{"model":"` + model + `",` + s + `"max_tokens":64,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"` + text + `"}]}`)}
}

func collect(t *testing.T, st llm.Stream) (string, error) {
	t.Helper()
	defer st.Close()
	var b strings.Builder
	for {
		c, err := st.Next()
		if err == io.EOF {
			return b.String(), nil
		}
		if err != nil {
			return b.String(), err
		}
		for _, ch := range c.Choices {
			b.WriteString(ch.Content)
		}
	}
}

func TestGeminiAndClaudeOnVertex(t *testing.T) {
	s, ts, a := setup(t, time.Hour)
	for _, model := range []string{"gemini-2.5-flash", "claude-sonnet-4@20250514"} {
		resp, err := a.Do(context.Background(), chatReq(model, "hi", false), "")
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if got := *resp.Completion.Choices[0].Message.Content; got != providermock.Content(3) {
			t.Fatalf("%s: %q", model, got)
		}
		resp, err = a.Do(context.Background(), chatReq(model, "hi", true), "")
		if err != nil {
			t.Fatalf("%s stream: %v", model, err)
		}
		if got, err := collect(t, resp.Stream); err != nil || got != providermock.Content(3) {
			t.Fatalf("%s stream: %q %v", model, got, err)
		}
	}
	paths := []string{}
	for _, r := range s.Requests() {
		paths = append(paths, r.Path)
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ya29.mock-") {
			t.Fatalf("Authorization %q", r.Header.Get("Authorization"))
		}
	}
	want := []string{
		"/v1/projects/mock-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent",
		"/v1/projects/mock-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
		"/v1/projects/mock-project/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict",
		"/v1/projects/mock-project/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict",
	}
	if strings.Join(paths, "\n") != strings.Join(want, "\n") {
		t.Fatalf("paths\n%s", strings.Join(paths, "\n"))
	}
	if ts.Issued() != 1 {
		t.Fatalf("%d tokens issued for four requests within the token's hour", ts.Issued())
	}
}

func TestTokensAreRefreshed(t *testing.T) {
	// A token that lives 200 s is inside the library's early-refresh
	// window (225 s) from the start: still good at the mock, but each
	// request asks for a fresh one in the background.
	_, ts, a := setup(t, 200*time.Second)
	wait.For(t, 60*time.Second, "a refreshed token", func() bool {
		if _, err := a.Do(context.Background(), chatReq("gemini-2.5-flash", "hi", false), ""); err != nil {
			t.Fatal(err)
		}
		return ts.Issued() >= 2
	})
}

func TestRevokedTokenIsNotTheClientsFault(t *testing.T) {
	_, ts, a := setup(t, time.Hour)
	if _, err := a.Do(context.Background(), chatReq("gemini-2.5-flash", "hi", false), ""); err != nil {
		t.Fatal(err)
	}
	ts.Expire() // the server forgets it; the adapter still holds it
	_, err := a.Do(context.Background(), chatReq("gemini-2.5-flash", "hi", false), "")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || !e.Retryable {
		t.Fatalf("err %v", err)
	}
}

func TestBadCredentialsAreRefusedAtSetup(t *testing.T) {
	_, err := New(table.Provider{ID: "vx", Kind: table.KindVertex, BaseURL: "http://127.0.0.1:1", Region: "eu", CloudRegion: "europe-west4",
		Project: "p-123456", APIKey: `{"type":"service_account","private_key":"secret-material"}`})
	if err == nil || strings.Contains(err.Error(), "secret-material") {
		t.Fatalf("err %v", err)
	}
}

func TestUpstreamErrorsInGoogleShape(t *testing.T) {
	_, _, a := setup(t, time.Hour)
	_, err := a.Do(context.Background(), chatReq("gemini-2.5-flash", "x #mock status=429", false), "")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests || !e.Retryable {
		t.Fatalf("gemini 429: %v", err)
	}
	_, err = a.Do(context.Background(), chatReq("claude-sonnet-4@20250514", "x #mock status=529", false), "")
	if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || !e.Retryable {
		t.Fatalf("claude 529: %v", err)
	}
}

var update = flag.Bool("update", false, "rewrite golden files")

// TestGoldenRequests: the bodies Vertex receives for a Gemini and a
// Claude model, as testdata has them.
func TestGoldenRequests(t *testing.T) {
	s, _, a := setup(t, time.Hour)
	for _, c := range []struct{ model, file string }{
		{"gemini-2.5-flash", "generate_content.json"},
		{"claude-sonnet-4@20250514", "raw_predict.json"},
	} {
		if _, err := a.Do(context.Background(), chatReq(c.model, "hi", false), ""); err != nil {
			t.Fatal(err)
		}
		reqs := s.Requests()
		got := reqs[len(reqs)-1].Body
		path := filepath.Join("testdata", c.file)
		if *update {
			var buf bytes.Buffer
			json.Indent(&buf, got, "", "  ")
			os.WriteFile(path, append(buf.Bytes(), '\n'), 0o644)
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if json.Unmarshal(got, &g) != nil || json.Unmarshal(want, &w) != nil || !reflect.DeepEqual(g, w) {
			t.Fatalf("%s: got %s\nwant %s", c.file, got, want)
		}
	}
}
