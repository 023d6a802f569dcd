package azure

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

func mock(t *testing.T, cfg providermock.Config) (*providermock.Server, string) {
	t.Helper()
	cfg.Kind, cfg.Chunks = providermock.KindAzure, 4
	s, err := providermock.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, base
}

func chatReq(text string, stream bool) *llm.Request {
	s := ""
	if stream {
		s = `"stream":true,`
	}
	return &llm.Request{ID: "r1", Op: llm.OpChat, Model: "gpt-4o", Stream: stream,
		Body: []byte(`{"model":"gpt-4o",` + s + `"messages":[{"role":"user","content":"` + text + `"}]}`)}
}

func TestDeploymentURLAndKey(t *testing.T) {
	s, base := mock(t, providermock.Config{APIKey: "azure-key"})
	a, err := New(table.Provider{ID: "az", Kind: table.KindAzure, BaseURL: base, APIKey: "azure-key", APIVersion: "2025-01-01-preview"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	resp, err := a.Do(context.Background(), chatReq("hi", false), "my-gpt4o-deployment")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(resp.Body), providermock.Content(4)) || resp.Usage.CompletionTokens != 4 {
		t.Fatalf("answer %s", resp.Body)
	}
	r := s.Requests()[0]
	if r.Path != "/openai/deployments/my-gpt4o-deployment/chat/completions" || r.Header.Get("Api-Key") != "azure-key" || r.Header.Get("Authorization") != "" {
		t.Fatalf("request %s %v", r.Path, r.Header)
	}
	// Streams pass through byte for byte.
	resp, err = a.Do(context.Background(), chatReq("hi", true), "my-gpt4o-deployment")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	n := 0
	for {
		if _, err := resp.Stream.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if u, ok := resp.Stream.Usage(); n < 4 || !ok || u.CompletionTokens != 4 {
		t.Fatalf("%d chunks, usage %+v", n, u)
	}
}

func TestAPIVersionDefaultIsSent(t *testing.T) {
	_, base := mock(t, providermock.Config{})
	a, _ := New(table.Provider{ID: "az", Kind: table.KindAzure, BaseURL: base})
	defer a.Close()
	// The mock answers 404 without an api-version.
	if _, err := a.Do(context.Background(), chatReq("hi", false), "dep"); err != nil {
		t.Fatal(err)
	}
}

func TestWrongKeyIsNotTheClientsFault(t *testing.T) {
	_, base := mock(t, providermock.Config{APIKey: "azure-key"})
	a, _ := New(table.Provider{ID: "az", Kind: table.KindAzure, BaseURL: base, APIKey: "wrong"})
	defer a.Close()
	_, err := a.Do(context.Background(), chatReq("hi", false), "dep")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || !e.Retryable {
		t.Fatalf("err %v", err)
	}
}

func TestContentFilterIsPassedThrough(t *testing.T) {
	_, base := mock(t, providermock.Config{})
	a, _ := New(table.Provider{ID: "az", Kind: table.KindAzure, BaseURL: base})
	defer a.Close()
	_, err := a.Do(context.Background(), chatReq("bad words #mock content_filter=1", false), "dep")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != "content_filter" || e.Param != "prompt" ||
		!strings.Contains(e.Message, "content management policy") || !strings.Contains(e.Message, "(filtered: violence=medium)") {
		t.Fatalf("err %+v", err)
	}
}

func TestEntraTokenFileIsReadAgainWhenItChanges(t *testing.T) {
	s, base := mock(t, providermock.Config{BearerToken: "entra-token-1"})
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("entra-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(table.Provider{ID: "az", Kind: table.KindAzure, BaseURL: base, Auth: table.AuthEntra, TokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Do(context.Background(), chatReq("hi", false), "dep"); err != nil {
		t.Fatal(err)
	}
	if got := s.Requests()[0].Header.Get("Authorization"); got != "Bearer entra-token-1" {
		t.Fatalf("Authorization %q", got)
	}
	// The renewer writes a new token; after the recheck interval the
	// adapter sends it.
	if err := os.WriteFile(file, []byte("entra-token-22\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := &token{file: file}
	if v, _ := tok.get(); v != "entra-token-22" {
		t.Fatalf("read %q", v)
	}
	tok.checked = time.Time{}
	os.WriteFile(file, []byte("entra-token-333"), 0o600)
	if v, _ := tok.get(); v != "entra-token-333" {
		t.Fatalf("after a change, read %q", v)
	}
	os.WriteFile(file, nil, 0o600) // truncated while being rewritten
	tok.checked = time.Time{}
	if v, err := tok.get(); v != "entra-token-333" || err != nil {
		t.Fatalf("an empty file replaced the token: %q %v", v, err)
	}
}

func TestEntraNeedsAToken(t *testing.T) {
	if _, err := New(table.Provider{ID: "az", Kind: table.KindAzure, BaseURL: "http://127.0.0.1:1", Auth: table.AuthEntra}); err == nil {
		t.Fatal("entra without a token was accepted")
	}
}

func FuzzParseError(f *testing.F) {
	f.Add([]byte(`{"error":{"code":"content_filter","message":"m","param":"prompt","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}`))
	f.Add([]byte(`{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded"}}`))
	f.Add([]byte(`{"statusCode":401,"message":"Unauthorized"}`))
	f.Add([]byte(`{"error":{"code":404}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := ParseError(b)
		if d.Code == "content_filter" && d.Param == "" {
			t.Fatal("a content filter refusal without its param")
		}
	})
}
