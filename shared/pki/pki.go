// Package pki makes the certificate authority and node certificates for
// the mutual TLS of Meridian's links between nodes, and checks them.
//
// A node certificate names its node as common name, DNS SAN and the URI
// SAN spiffe://meridian/node/<id> (identity.go); only such a certificate
// may act as a link peer. The control plane's cluster CA signs them from
// certificate requests (the key never leaves the node). The Write*
// helpers are for development clusters and tests: keys are written to
// disk unencrypted (mode 0600). The package never reads a key from anywhere but the
// directories it is given, and never talks to the network.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// ErrBadNodeID rejects node IDs that cannot be a file name and a DNS SAN.
var ErrBadNodeID = errors.New("pki: node ID must be 1-63 characters of a-z, 0-9, '-' and '.'")

// clockSkew backdates certificates so a peer whose clock is a little
// behind still accepts them.
const clockSkew = ClockSkew

// ClockSkew is how far certificates are backdated.
const ClockSkew = 5 * time.Minute

// CA is a certificate authority held in memory.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a CA whose self-signed certificate is valid from now
// (less a little clock skew) for validFor.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	return newCA(name, time.Now().Add(-clockSkew), time.Now().Add(validFor))
}

func newCA(name string, notBefore, notAfter time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Meridian"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue signs a node certificate for nodeID, usable for client and
// server authentication, with nodeID as its common name and a DNS SAN,
// plus each host as an IP or DNS SAN.
func (ca *CA) Issue(nodeID string, hosts []string, validFor time.Duration) (tls.Certificate, error) {
	return ca.issue(nodeID, hosts, time.Now().Add(-clockSkew), time.Now().Add(validFor))
}

// IssueValidity is Issue with an explicit validity period, for tests of
// expired and not-yet-valid certificates.
func (ca *CA) IssueValidity(nodeID string, hosts []string, notBefore, notAfter time.Time) (tls.Certificate, error) {
	return ca.issue(nodeID, hosts, notBefore, notAfter)
}

// nodeTemplate is a node certificate: client and server auth plus the
// node role, the node ID as common name and DNS SAN, hosts as more SANs.
func nodeTemplate(nodeID string, hosts []string, notBefore, notAfter time.Time) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: nodeID, Organization: []string{"Meridian"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{nodeID},
		URIs:         []*url.URL{NodeURI(nodeID)},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" && h != nodeID {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

func (ca *CA) issue(nodeID string, hosts []string, notBefore, notAfter time.Time) (tls.Certificate, error) {
	if !validNodeID(nodeID) {
		return tls.Certificate{}, ErrBadNodeID
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := nodeTemplate(nodeID, hosts, notBefore, notAfter)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: sign certificate for %s: %w", nodeID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Pool returns a pool holding only the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteCA creates a CA key and self-signed certificate valid for validFor
// and writes ca.crt (0644) and ca.key (0600) into dir.
func WriteCA(dir, name string, validFor time.Duration) error {
	ca, err := NewCA(name, validFor)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, CAKeyFile), "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, CACertFile), "CERTIFICATE", ca.Cert.Raw, 0o644)
}

// LoadCA reads ca.crt and ca.key from dir.
func LoadCA(dir string) (*CA, error) {
	cert, err := LoadCertFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("pki: %s holds no PEM block", CAKeyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", CAKeyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s is not a signing key", CAKeyFile)
	}
	return &CA{Cert: cert, Key: signer}, nil
}

// WriteNodeCert signs a certificate for nodeID with the CA in caDir (CN
// and a DNS SAN = nodeID, plus hosts as IP or DNS SANs, usable for client
// and server auth) and writes <nodeID>.crt and <nodeID>.key (0600) into
// outDir.
func WriteNodeCert(caDir, outDir, nodeID string, hosts []string, validFor time.Duration) error {
	return writeCert(caDir, outDir, nodeID, hosts, validFor, (*CA).Issue)
}

// WriteServerCert is WriteNodeCert for a service that is not a node (a
// control API, a NATS server): the certificate has no node URI, so it
// can never act as a link peer.
func WriteServerCert(caDir, outDir, name string, hosts []string, validFor time.Duration) error {
	return writeCert(caDir, outDir, name, hosts, validFor, (*CA).IssueServer)
}

func writeCert(caDir, outDir, nodeID string, hosts []string, validFor time.Duration,
	issue func(*CA, string, []string, time.Duration) (tls.Certificate, error)) error {
	if !validNodeID(nodeID) {
		return ErrBadNodeID
	}
	ca, err := LoadCA(caDir)
	if err != nil {
		return err
	}
	c, err := issue(ca, nodeID, hosts, validFor)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(outDir, nodeID+".key"), "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(filepath.Join(outDir, nodeID+".crt"), "CERTIFICATE", c.Certificate[0], 0o644)
}

// LoadCertFile reads the first certificate in a PEM file.
func LoadCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s holds no certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return c, nil
}

// LoadPool reads every certificate in a PEM file into a pool, for the
// cluster CA a node trusts.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("pki: %s holds no certificate", path)
	}
	return p, nil
}

// writePEM writes through a temporary file created with its final mode,
// so a key is never readable by others, not even for a moment.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil { // the umask may have narrowed it; a key must not be wider
		tmp.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: typ, Bytes: der}); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func validNodeID(id string) bool {
	if id == "" || len(id) > 63 || strings.HasPrefix(id, ".") || strings.Contains(id, "..") {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
