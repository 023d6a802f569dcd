package tablewire

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
)

// A table may name only secrets meant for providers: env vars with the
// prefix, files in the secrets directory. Everything else is refused by
// its text (on the control plane) and never read (on the edge), however
// the path is spelt.
func TestSecretRefBounds(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	os.Mkdir(secrets, 0o700)
	os.WriteFile(filepath.Join(secrets, "oai"), []byte("sk-in-bounds\n"), 0o600)
	outside := filepath.Join(dir, "shadow")
	os.WriteFile(outside, []byte("root-hash\n"), 0o600)
	os.Symlink(outside, filepath.Join(secrets, "link-out"))
	os.Mkdir(filepath.Join(secrets, "sub"), 0o700)
	os.Symlink(dir, filepath.Join(secrets, "sub", "up"))

	p := SecretPolicy{Dir: secrets}
	env := map[string]string{"HOME": "/root", "MERIDIAN_GOSSIP_KEYS": "gossip", "MERIDIAN_SECRET_OAI": "sk-env"}
	r := Resolver{Policy: p, Getenv: func(k string) string { return env[k] }}

	for _, ok := range []struct{ ref, want string }{
		{"env:MERIDIAN_SECRET_OAI", "sk-env"},
		{"file:" + secrets + "/oai", "sk-in-bounds"},
	} {
		if err := p.Check(ok.ref); err != nil {
			t.Errorf("%s refused: %v", ok.ref, err)
		}
		got, err := r.resolve(ok.ref)
		if err != nil || got.Reveal() != ok.want {
			t.Errorf("%s: %q, %v", ok.ref, got.Reveal(), err)
		}
	}
	for _, bad := range []string{
		"env:HOME", "env:MERIDIAN_GOSSIP_KEYS", "env:MERIDIAN_SECRET_", "file:/etc/passwd",
		"file:" + secrets + "/../shadow", "file:" + secrets + "//oai", "file:" + secrets,
		"file:" + secrets + "x/oai", "sk-live-123",
	} {
		if err := p.Check(bad); !errors.Is(err, ErrSecretRef) {
			t.Errorf("%s passed the check: %v", bad, err)
		}
		if got, err := r.resolve(bad); err == nil {
			t.Errorf("%s resolved to %q", bad, got.Reveal())
		}
	}
	// Symlinks pass the textual check but are never followed out.
	for _, link := range []string{"file:" + secrets + "/link-out", "file:" + secrets + "/sub/up/shadow"} {
		if got, err := r.resolve(link); err == nil {
			t.Errorf("%s resolved through a symlink to %q", link, got.Reveal())
		}
	}
	// Nothing in a refusal echoes the ref.
	if _, err := r.resolve("file:/etc/passwd"); err == nil || strings.Contains(err.Error(), "passwd") {
		t.Errorf("refusal: %v", err)
	}
	// Defaults: MERIDIAN_SECRET_ and /etc/meridian/secrets.
	var def SecretPolicy
	if def.Check("env:OPENAI_API_KEY") == nil || def.Check("env:MERIDIAN_SECRET_OPENAI") != nil || def.Check("file:/etc/meridian/secrets/k") != nil {
		t.Error("default policy")
	}
	// The control plane's check names the provider's field.
	tab := &tablev1.RoutingTable{Entities: &tablev1.Entities{Providers: []*controlv1.Provider{{Id: "evil", SecretRef: "file:/etc/passwd"}}}}
	var fe *FieldError
	if err := CheckSecretRefs(tab, def); !errors.As(err, &fe) || fe.Field != "providers[evil].secret_ref" {
		t.Errorf("CheckSecretRefs: %v", err)
	}
}
