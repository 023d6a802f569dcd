package tablewire

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
)

// Where a provider's secret_ref may point. A table comes from the control
// plane, so a ref is an instruction from the network to read a local
// secret and send it to the provider's base_url; without bounds, a table
// could name env:HOME, the gossip keys' variable or file:/etc/shadow and
// have every edge send it to a host of the writer's choosing. Refs are
// therefore confined to environment variables with a prefix and files in
// one directory, checked on the control plane when a provider is written
// and when a table is compiled, and again on the edge before anything is
// read.

// Defaults for SecretPolicy.
const (
	DefaultSecretEnvPrefix = "MERIDIAN_SECRET_"
	DefaultSecretsDir      = "/etc/meridian/secrets"
)

// ErrSecretRef wraps every reason a secret_ref is out of bounds.
var ErrSecretRef = errors.New("secret_ref out of bounds")

// SecretPolicy bounds secret_refs. The zero value is the defaults.
type SecretPolicy struct {
	// EnvPrefix is the prefix every "env:NAME" must start with. Default
	// MERIDIAN_SECRET_.
	EnvPrefix string
	// Dir is the directory every "file:/path" must lie in, symlinks
	// resolved. Default /etc/meridian/secrets.
	Dir string
}

func (p SecretPolicy) withDefaults() SecretPolicy {
	if p.EnvPrefix == "" {
		p.EnvPrefix = DefaultSecretEnvPrefix
	}
	if p.Dir == "" {
		p.Dir = DefaultSecretsDir
	}
	p.Dir = filepath.Clean(p.Dir)
	return p
}

// Check tells whether a ref is within bounds, by its text alone (the
// control plane has no access to the edges' files). The error names the
// rule, never the ref.
func (p SecretPolicy) Check(ref string) error {
	p = p.withDefaults()
	switch {
	case ref == "":
		return nil
	case strings.HasPrefix(ref, "env:"):
		name := ref[len("env:"):]
		if !strings.HasPrefix(name, p.EnvPrefix) || len(name) == len(p.EnvPrefix) {
			return fmt.Errorf("%w: environment variables must start with %s", ErrSecretRef, p.EnvPrefix)
		}
		return nil
	case strings.HasPrefix(ref, "file:/"):
		if _, err := p.rel(ref[len("file:"):]); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf(`%w: must be "env:%sNAME" or "file:%s/NAME"`, ErrSecretRef, p.EnvPrefix, p.Dir)
}

// rel returns path relative to the secrets directory, refusing anything
// that is not plainly inside it.
func (p SecretPolicy) rel(path string) (string, error) {
	if filepath.Clean(path) != path || strings.ContainsRune(path, 0) {
		return "", fmt.Errorf("%w: file paths must be clean (no .., //, or trailing /)", ErrSecretRef)
	}
	rel, ok := strings.CutPrefix(path, p.Dir+"/")
	if !ok || rel == "" {
		return "", fmt.Errorf("%w: files must lie in %s", ErrSecretRef, p.Dir)
	}
	return rel, nil
}

// readSecretFile reads a file inside the secrets directory through an
// os.Root, so a symlink (or a later rename) cannot lead out of it.
func (p SecretPolicy) readSecretFile(path string) ([]byte, error) {
	p = p.withDefaults()
	rel, err := p.rel(path)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(p.Dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSecretFile))
}

// CheckSecretRefs checks every provider's secret_ref and every tenant's
// webhook_secret_ref against p, for the control plane before it
// publishes a table. The error names the field, never the ref.
func CheckSecretRefs(t *tablev1.RoutingTable, p SecretPolicy) error {
	for _, pr := range t.GetEntities().GetProviders() {
		if err := p.Check(pr.GetSecretRef()); err != nil {
			return &FieldError{Field: "providers[" + pr.GetId() + "].secret_ref", Msg: err.Error()}
		}
	}
	for _, tn := range t.GetEntities().GetTenants() {
		if err := p.Check(tn.GetWebhookSecretRef()); err != nil {
			return &FieldError{Field: "tenants[" + tn.GetId() + "].webhook_secret_ref", Msg: err.Error()}
		}
	}
	return nil
}
