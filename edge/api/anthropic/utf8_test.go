package anthropic

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
)

// invalidUTF8 are Messages bodies that are JSON but for bytes that are
// not UTF-8: in text, in a key, a surrogate encoded as UTF-8, and a
// sequence cut short.
var invalidUTF8 = []string{
	"{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"a\xffb\"}]}",
	"{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"x\x80\":1}",
	"{\"model\":\"m\",\"max_tokens\":5,\"system\":\"\xed\xa0\x80\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
	"{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"\xe6\x97\"}]}]}",
}

// TestInvalidUTF8 checks that a body that is not UTF-8 is answered 400 in
// Anthropic's error shape by the surface, before any upstream sees it.
func TestInvalidUTF8(t *testing.T) {
	mux := http.NewServeMux()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	New(api.Config{Gateway: gateway.New(gateway.Config{Logger: quiet}), Logger: quiet, MaxBodyBytes: 1 << 20, NoAuth: true}).Register(mux)
	for _, body := range invalidUTF8 {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, messagesRequest(body))
		var e struct {
			Type  string `json:"type"`
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != http.StatusBadRequest || e.Type != "error" ||
			e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "UTF-8") {
			t.Errorf("%q: %d %s", body, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, messagesRequest(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"aé日b"}]}`))
	if rec.Code == http.StatusBadRequest {
		t.Fatalf("a valid UTF-8 body was refused: %s", rec.Body)
	}
}

func messagesRequest(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body))
	r.Header.Set("anthropic-version", "2023-06-01")
	return r
}

// FuzzInvalidUTF8 puts arbitrary bytes into a message's text, as they
// are (quotes, backslashes and control bytes aside, which JSON escapes):
// the body is accepted exactly when it is UTF-8, and refused with a 400
// that says so otherwise.
func FuzzInvalidUTF8(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add([]byte("a\xffb"))
	f.Add([]byte("\xed\xa0\x80"))
	f.Add([]byte("日本\xe6\x97"))
	f.Fuzz(func(t *testing.T, content []byte) {
		b := []byte(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x`)
		for _, c := range content {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, ' ')
			default:
				b = append(b, c)
			}
		}
		body := append(b, `"}]}]}`...)
		_, e := DecodeMessages(body)
		switch {
		case utf8.Valid(body) && e != nil:
			t.Fatalf("refused UTF-8 %q: %v", body, e)
		case !utf8.Valid(body) && (e == nil || e.Status != http.StatusBadRequest || !strings.Contains(e.Message, "UTF-8")):
			t.Fatalf("did not refuse %q as not UTF-8: %+v", body, e)
		}
	})
}
