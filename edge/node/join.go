package node

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/pki"
)

// The fleet identity of an edge (control.api_url): it joins once with a
// one-time token, presenting a certificate request for a key it made and
// the public half of a NATS nkey it made; it receives a short-lived node
// certificate and the cluster CA; it keeps all of it in its data dir and
// renews the certificate at half its life with a request signed by the
// current key. Neither private key ever leaves the edge. Each answer
// also carries the cluster ID and table public keys (current, then a
// staged one), kept beside the certificate: an edge that pins no table
// key in its config checks tables against these, refreshed at each
// renewal.

// Files in the identity dir.
const (
	identityKey  = "node.key"
	identityCert = "node.crt"
	identityCA   = "ca.crt"
	identitySeed = "nats.seed"
	identityKeys = "table-keys.json"
)

// tableTrust is what the control plane said the edge should check its
// tables against; identityKeys holds it as JSON.
type tableTrust struct {
	ClusterID string   `json:"cluster_id"`
	Keys      []string `json:"table_public_keys"`
}

func (t tableTrust) parse() ([]ed25519.PublicKey, error) {
	if len(t.Keys) == 0 {
		return nil, errors.New("no table public key")
	}
	return tablesync.ParsePublicKeys(t.Keys)
}

// identity is the edge's current credentials. cert changes at renewal;
// the keys and the CA do not.
type identity struct {
	dir, node, api string
	client         *http.Client
	log            *slog.Logger
	// pinned: the config pins table keys, so delivered ones are kept
	// but not needed.
	pinned bool

	key  crypto.Signer
	nkey nkeys.KeyPair
	ca   *x509.CertPool

	// onTrust, set before the renewal loop starts, hears the table keys
	// each renewal brings.
	onTrust func(tableTrust)

	mu        sync.Mutex
	trust     tableTrust
	cert      *tls.Certificate
	renewErr  string    // the last renewal's failure, "" after a success
	renewNext time.Time // when the next renewal runs
}

// IdentityStatus is the node certificate's state in /readyz.
type IdentityStatus struct {
	Expires   time.Time `json:"expires"`
	NextRenew time.Time `json:"next_renew,omitzero"`
	// RenewError is why the last renewal failed (a revoked node's are
	// refused); empty after a success.
	RenewError string `json:"renew_error,omitempty"`
}

func (id *identity) status() IdentityStatus {
	id.mu.Lock()
	defer id.mu.Unlock()
	return IdentityStatus{Expires: id.cert.Leaf.NotAfter.UTC(), NextRenew: id.renewNext.UTC(), RenewError: id.renewErr}
}

func (id *identity) setRenewal(next time.Time, err error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.renewNext, id.renewErr = next, ""
	if err != nil {
		id.renewErr = err.Error()
	}
}

// joinRequest, renewRequest and credentials are the control API's
// /v1/control/identity/join and /renew bodies (control/api join.go).
type joinRequest struct {
	Token   string `json:"token"`
	CSR     string `json:"csr"`
	NATSKey string `json:"nats_key"`
}

type renewRequest struct {
	Certificate string `json:"certificate"`
	CSR         string `json:"csr"`
}

type credentials struct {
	Node            string   `json:"node"`
	Certificate     string   `json:"certificate"`
	CA              string   `json:"ca"`
	ClusterID       string   `json:"cluster_id"`
	TablePublicKeys []string `json:"table_public_keys"`
}

// loadIdentity reads the stored credentials, joining first when there
// are none (or the stored certificate has expired and a token is given).
func loadIdentity(ctx context.Context, cfg config.Config, log *slog.Logger) (*identity, error) {
	c := cfg.Control
	id := &identity{dir: c.IdentityDir(cfg.NodeID), node: cfg.NodeID, api: strings.TrimSuffix(c.APIURL, "/"), log: log.With("component", "identity"), pinned: len(c.Keys()) > 0}
	id.client = &http.Client{Timeout: 30 * time.Second}
	if c.APICAFile != "" {
		pool, err := pki.LoadPool(c.APICAFile)
		if err != nil {
			return nil, fmt.Errorf("identity: control.api_ca_file: %w", err)
		}
		id.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	if err := os.MkdirAll(id.dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := id.loadKeys(); err != nil {
		return nil, err
	}
	err := id.loadCert()
	switch {
	case err == nil:
		id.log.Info("identity: using stored credentials", "dir", id.dir, "expires", id.expiry())
		if terr := id.loadTrust(); terr != nil && !id.pinned {
			// Joined before the keys came with the certificate, or the
			// file is gone: a renewal brings them.
			id.log.Info("identity: no stored table keys; renewing to fetch them", "err", terr)
			if err := id.renew(ctx); err != nil {
				return nil, err
			}
		}
		return id, nil
	case c.JoinToken == "":
		return nil, fmt.Errorf("identity: no usable credentials in %s (%v) and no join token: create one with `meridianctl node token %s` and set control.join_token or MERIDIAN_JOIN_TOKEN", id.dir, err, cfg.NodeID)
	}
	if err := id.join(ctx, c.JoinToken.Reveal()); err != nil {
		return nil, err
	}
	id.log.Info("identity: joined the fleet", "expires", id.expiry())
	return id, nil
}

// loadKeys reads the node key and NATS seed, making them on first use.
func (id *identity) loadKeys() error {
	kp := filepath.Join(id.dir, identityKey)
	if b, err := os.ReadFile(kp); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return fmt.Errorf("identity: %s holds no PEM key", kp)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return fmt.Errorf("identity: %s: %w", kp, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return fmt.Errorf("identity: %s cannot sign", kp)
		}
		id.key = s
	} else {
		k, _, err := pki.NewKeyCSR(id.node)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return err
		}
		if err := writeSecret(kp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
			return err
		}
		id.key = k
	}
	sp := filepath.Join(id.dir, identitySeed)
	if seed, err := os.ReadFile(sp); err == nil {
		if id.nkey, err = nkeys.FromSeed(bytes.TrimSpace(seed)); err != nil {
			return fmt.Errorf("identity: %s: %w", sp, err)
		}
		return nil
	}
	kpair, err := nkeys.CreateUser()
	if err != nil {
		return err
	}
	seed, _ := kpair.Seed()
	if err := writeSecret(sp, seed); err != nil {
		return err
	}
	id.nkey = kpair
	return nil
}

// loadCert reads the stored certificate and CA; an expired certificate
// is an error (the edge must join again).
func (id *identity) loadCert() error {
	certPEM, err := os.ReadFile(filepath.Join(id.dir, identityCert))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(id.dir, identityCA))
	if err != nil {
		return err
	}
	return id.install(certPEM, caPEM, false)
}

// loadTrust reads the stored table keys.
func (id *identity) loadTrust() error {
	b, err := os.ReadFile(filepath.Join(id.dir, identityKeys))
	if err != nil {
		return err
	}
	var t tableTrust
	if err := json.Unmarshal(b, &t); err != nil {
		return fmt.Errorf("identity: %s: %w", identityKeys, err)
	}
	if _, err := t.parse(); err != nil {
		return fmt.Errorf("identity: %s: %w", identityKeys, err)
	}
	id.mu.Lock()
	id.trust = t
	id.mu.Unlock()
	return nil
}

// tableTrust returns the table keys the control plane delivered last.
func (id *identity) tableTrust() tableTrust {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.trust
}

// accept installs a join's or renewal's answer: the certificate, then
// the table keys, which it checks first so a bad answer changes
// nothing.
func (id *identity) accept(cr credentials) error {
	t := tableTrust{ClusterID: cr.ClusterID, Keys: cr.TablePublicKeys}
	if _, err := t.parse(); err != nil {
		if !id.pinned {
			return fmt.Errorf("identity: the control plane sent no usable table keys (is it older than this edge? then pin control.table_public_key): %w", err)
		}
		// The config's keys are the ones used; the certificate stands.
		id.log.Warn("identity: the control plane sent no usable table keys; using the pinned ones", "err", err)
		return id.install([]byte(cr.Certificate), []byte(cr.CA), true)
	}
	if err := id.install([]byte(cr.Certificate), []byte(cr.CA), true); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(t, "", "  ")
	if err := writeSecret(filepath.Join(id.dir, identityKeys), append(b, '\n')); err != nil {
		return err
	}
	id.mu.Lock()
	old := id.trust
	id.trust = t
	id.mu.Unlock()
	if !slices.Equal(old.Keys, t.Keys) || old.ClusterID != t.ClusterID {
		id.log.Info("identity: the control plane's table keys", "keys", t.Keys, "cluster", t.ClusterID)
	}
	if id.onTrust != nil {
		id.onTrust(t)
	}
	return nil
}

// install makes certPEM (for this node's key, signed by caPEM) current,
// writing both to disk when save is set.
func (id *identity) install(certPEM, caPEM []byte, save bool) error {
	leaf, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return err
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return err
	}
	pool := pki.PoolOf(ca)
	node, err := pki.VerifyNode(pki.Chain(leaf), pool, time.Now())
	if err != nil {
		return fmt.Errorf("identity: certificate: %w", err)
	}
	if node != id.node {
		return fmt.Errorf("identity: certificate is for node %q, this node is %q", node, id.node)
	}
	pub, err := x509.MarshalPKIXPublicKey(id.key.Public())
	if err != nil {
		return err
	}
	if got, _ := x509.MarshalPKIXPublicKey(leaf.PublicKey); !bytes.Equal(pub, got) {
		return errors.New("identity: certificate is not for this node's key")
	}
	if save {
		if err := writeSecret(filepath.Join(id.dir, identityCA), caPEM); err != nil {
			return err
		}
		if err := writeSecret(filepath.Join(id.dir, identityCert), certPEM); err != nil {
			return err
		}
	}
	id.mu.Lock()
	id.cert = &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: id.key, Leaf: leaf}
	if id.ca == nil {
		id.ca = pool
	}
	id.mu.Unlock()
	return nil
}

func (id *identity) join(ctx context.Context, token string) error {
	csr, err := pki.CSR(id.key, id.node)
	if err != nil {
		return err
	}
	pub, _ := id.nkey.PublicKey()
	var cr credentials
	if err := id.post(ctx, "/v1/control/identity/join", joinRequest{Token: token, CSR: string(csr), NATSKey: pub}, &cr); err != nil {
		return fmt.Errorf("identity: join: %w", err)
	}
	return id.accept(cr)
}

func (id *identity) renew(ctx context.Context) error {
	csr, err := pki.CSR(id.key, id.node)
	if err != nil {
		return err
	}
	cur := id.current()
	var cr credentials
	req := renewRequest{Certificate: string(pki.CertPEM(cur.Leaf.Raw)), CSR: string(csr)}
	if err := id.post(ctx, "/v1/control/identity/renew", req, &cr); err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	return id.accept(cr)
}

// post sends a JSON body; a non-2xx answer is an error carrying the
// control API's message.
func (id *identity) post(ctx context.Context, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, id.api+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := id.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(rb, &e)
		return fmt.Errorf("control API answered %d: %s", resp.StatusCode, e.Error.Message)
	}
	return json.Unmarshal(rb, out)
}

// current is the certificate links present now.
func (id *identity) current() *tls.Certificate {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert
}

func (id *identity) expiry() time.Time { return id.current().Leaf.NotAfter }

// renewAt is half-way through the current certificate's life, jittered
// by up to a tenth of it so a fleet joined together does not renew
// together. The life counts from issue, not from NotBefore, which the
// CA backdates by pki.ClockSkew.
func (id *identity) renewAt() time.Time {
	l := id.current().Leaf
	issued := l.NotBefore.Add(pki.ClockSkew)
	if !issued.Before(l.NotAfter) {
		issued = l.NotBefore
	}
	life := l.NotAfter.Sub(issued)
	at := issued.Add(backoff.Between(life/2, life/2+life/10))
	return later(at, time.Now().Add(time.Second))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// renewLoop renews at half life until ctx ends. A failed renewal is
// retried every minute (or sooner, near expiry) until the certificate
// expires; a revoked node's renewals are refused, so its certificate
// lapses.
func (id *identity) renewLoop(ctx context.Context) {
	next := id.renewAt()
	id.setRenewal(next, nil)
	for {
		wait := time.Until(next)
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := id.renew(rctx)
		cancel()
		if err == nil {
			id.log.Info("identity: renewed the node certificate", "expires", id.expiry())
			next = id.renewAt()
			id.setRenewal(next, nil)
			continue
		}
		left := time.Until(id.expiry())
		id.log.Warn("identity: certificate renewal failed; retrying", "err", err, "expires_in", left.Round(time.Second))
		next = time.Now().Add(min(time.Minute, max(left/4, time.Second)))
		id.setRenewal(next, err)
	}
}

// natsAuth is the NATS user public key and a nonce signer.
func (id *identity) natsAuth() (string, func([]byte) ([]byte, error)) {
	pub, _ := id.nkey.PublicKey()
	return pub, id.nkey.Sign
}

// writeSecret writes a file readable by this user only, whole or not at
// all.
func writeSecret(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}
