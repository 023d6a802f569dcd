package api

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/shared/table"
)

func TestAuthenticate(t *testing.T) {
	const good = "sk-good-0123456789"
	sum := sha256.Sum256([]byte(good))
	base := table.Table{
		Providers: []table.Provider{{ID: "p", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1"}},
		Models:    []table.Model{{ID: "m"}},
		Routes:    []*table.Route{{Model: "m", Targets: []table.Target{{Provider: "p"}}}},
		Tenants:   []table.Tenant{{ID: "acme"}},
	}
	withKey := base
	withKey.Keys = []*table.Key{{ID: "k", Hash: "sha256:" + hex.EncodeToString(sum[:]), Tenant: "acme"}}

	for _, tt := range []struct {
		name   string
		noAuth bool
		tab    table.Table
		key    string
		wantID string
		want   string // "" for accepted, else a piece of the 401's message
	}{
		{"keys, good key", false, withKey, good, "k", ""},
		{"keys, no key", false, withKey, "", "", "didn't provide"},
		{"keys, bad key", false, withKey, "sk-bad", "", "Incorrect"},
		{"keys, table without keys, no key", false, base, "", "", "no keys to accept"},
		{"keys, table without keys, a key", false, base, good, "", "no keys to accept"},
		{"none, table without keys", true, base, "", "", ""},
		{"none, unknown key", true, withKey, "sk-bad", "", ""},
		{"none, known key names its tenant", true, withKey, good, "k", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			gw := gateway.New(gateway.Config{Logger: quiet})
			defer gw.Close()
			tab := tt.tab
			tab.Providers = append([]table.Provider(nil), tab.Providers...)
			if err := gw.SetTable(&tab); err != nil {
				t.Fatal(err)
			}
			c := &Config{Gateway: gw, NoAuth: tt.noAuth}
			r := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
			if tt.key != "" {
				r.Header.Set("Authorization", "Bearer "+tt.key)
			}
			cl := &gateway.Client{}
			r = r.WithContext(gateway.WithClient(r.Context(), cl))
			id, e := c.Authenticate(r)
			if tt.want == "" {
				if e != nil || id.KeyID != tt.wantID {
					t.Fatalf("got %q, %v; want %q accepted", id.KeyID, e, tt.wantID)
				}
				if id.KeyID != "" && (cl.Tenant != "acme" || cl.Key != "k" || id.TenantID != "acme" || id.Tenant == nil) {
					t.Fatalf("tenant %q", cl.Tenant)
				}
				return
			}
			if e == nil || e.Status != http.StatusUnauthorized || e.Code != "invalid_api_key" || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("got %q, %+v; want a 401 invalid_api_key saying %q", id.KeyID, e, tt.want)
			}
		})
	}
}
