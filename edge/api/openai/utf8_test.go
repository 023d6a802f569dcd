package openai

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

// invalidUTF8 are chat bodies that are JSON but for bytes that are not
// UTF-8: in a string, in a key, a lone continuation byte, a surrogate
// encoded as UTF-8, and a sequence cut short.
var invalidUTF8 = []string{
	"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"a\xffb\"}]}",
	"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"x\x80\":1}",
	"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}",
	"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xe6\x97\"}]}",
}

// TestInvalidUTF8 checks that a body that is not UTF-8 is answered 400 in
// OpenAI's error shape by the surface, before any upstream sees it, on
// every endpoint.
func TestInvalidUTF8(t *testing.T) {
	mux := http.NewServeMux()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	New(api.Config{Gateway: gateway.New(gateway.Config{Logger: quiet}), Logger: quiet, MaxBodyBytes: 1 << 20, NoAuth: true}).Register(mux)
	for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} {
		for _, body := range invalidUTF8 {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
				} `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != http.StatusBadRequest ||
				e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "UTF-8") {
				t.Errorf("%s %q: %d %s", path, body, rec.Code, rec.Body)
			}
		}
	}
	// The same body, valid, gets past decoding: to a 404 for the model,
	// which the empty table does not route.
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"aé日b"}]}`)))
	if rec.Code == http.StatusBadRequest {
		t.Fatalf("a valid UTF-8 body was refused: %s", rec.Body)
	}
}

// FuzzInvalidUTF8 puts arbitrary bytes into a message's content, as
// they are (quotes, backslashes and control bytes aside, which JSON
// escapes): the body is accepted exactly when it is UTF-8, and refused
// with a 400 that says so otherwise.
func FuzzInvalidUTF8(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add([]byte("a\xffb"))
	f.Add([]byte("\xed\xa0\x80"))
	f.Add([]byte("日本\xe6\x97"))
	f.Fuzz(func(t *testing.T, content []byte) {
		body := rawContentBody(`{"model":"m","messages":[{"role":"user","content":"`, content, `"}]}`)
		_, e := DecodeChat(body)
		switch {
		case utf8.Valid(body) && e != nil:
			t.Fatalf("refused UTF-8 %q: %v", body, e)
		case !utf8.Valid(body) && (e == nil || e.Status != http.StatusBadRequest || !strings.Contains(e.Message, "UTF-8")):
			t.Fatalf("did not refuse %q as not UTF-8: %+v", body, e)
		}
	})
}

// rawContentBody builds prefix+content+suffix with content's bytes as
// they are, but for those a JSON string cannot hold unescaped.
func rawContentBody(prefix string, content []byte, suffix string) []byte {
	b := []byte(prefix)
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
	return append(b, suffix...)
}
