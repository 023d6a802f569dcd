package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/shared/table"
)

// TestWithKeyHash: an in-process request acts as the key its context
// names by hash, whatever headers it carries, and its model access
// applies; a disabled or unknown hash is refused like an unknown key.
func TestWithKeyHash(t *testing.T) {
	s := newKeySurfaces(t, keysTable([]*table.Key{
		{ID: "batch", Hash: keyHash("sk-batch-0123456789"), AllowedModels: []string{"m"}},
		{ID: "off", Hash: keyHash("sk-off-0123456789"), Disabled: true},
	}, nil), nil)
	do := func(hash, header, model string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, chatPath, strings.NewReader(bodyOf(chatPath, model)))
		if header != "" {
			r.Header.Set("Authorization", "Bearer "+header)
		}
		ctx := gateway.WithClient(r.Context(), &gateway.Client{})
		if hash != "" {
			ctx = api.WithKeyHash(ctx, hash)
		}
		w := httptest.NewRecorder()
		s.mux.ServeHTTP(w, r.WithContext(ctx))
		return w
	}
	if w := do(keyHash("sk-batch-0123456789"), "", "m"); w.Code != http.StatusOK {
		t.Fatalf("by hash: %d %s", w.Code, w.Body)
	}
	if w := do(strings.ToUpper(keyHash("sk-batch-0123456789")[len("sha256:"):]), "", "m"); w.Code != http.StatusOK {
		t.Fatalf("by bare upper-case hash: %d %s", w.Code, w.Body)
	}
	if w := do(keyHash("sk-batch-0123456789"), "", "other"); w.Code != http.StatusForbidden {
		t.Fatalf("a model the key may not use: %d %s", w.Code, w.Body)
	}
	for name, hash := range map[string]string{"disabled": keyHash("sk-off-0123456789"), "unknown": keyHash("sk-nobody-0123456789")} {
		// A valid header does not rescue a refused hash.
		if w := do(hash, "sk-batch-0123456789", "m"); w.Code != http.StatusUnauthorized {
			t.Errorf("%s hash: %d %s", name, w.Code, w.Body)
		}
	}
}
