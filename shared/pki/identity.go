package pki

import (
	"bytes"
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
	"net/url"
	"strings"
	"time"
)

// NodeURIPrefix starts the URI SAN that marks a certificate as a
// Meridian node's, followed by its node ID (SPIFFE-style naming): only
// such a certificate may act as a link peer. A control-API certificate
// has none.
const NodeURIPrefix = "spiffe://meridian/node/"

// NodeURI is the URI SAN of a node certificate for id.
func NodeURI(id string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: "meridian", Path: "/node/" + id}
}

// Errors from VerifyNode.
var (
	// ErrNotNode is a certificate without the node role.
	ErrNotNode = errors.New("pki: not a node certificate")
	// ErrNodeMismatch is a certificate that names another node than the
	// one the peer claims to be.
	ErrNodeMismatch = errors.New("pki: certificate names another node")
)

// NodeID is the node a node certificate names: exactly one node URI
// SAN, agreeing with its common name.
func NodeID(c *x509.Certificate) (string, error) {
	id := ""
	for _, u := range c.URIs {
		if s := u.String(); strings.HasPrefix(s, NodeURIPrefix) {
			if id != "" {
				return "", fmt.Errorf("%w: it names two nodes", ErrNotNode)
			}
			id = strings.TrimPrefix(s, NodeURIPrefix)
		}
	}
	if id == "" {
		return "", ErrNotNode
	}
	if !validNodeID(id) || c.Subject.CommonName != id {
		return "", fmt.Errorf("%w: node %q does not match its common name", ErrNotNode, id)
	}
	return id, nil
}

// VerifyNode checks a certificate chain against roots at now, for client
// and server use, and returns the node it names.
func VerifyNode(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("pki: no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return "", fmt.Errorf("pki: %w", err)
	}
	return NodeID(chain[0])
}

// MarshalKey returns the CA's private key as PKCS#8 DER, for sealing.
func (ca *CA) MarshalKey() ([]byte, error) { return x509.MarshalPKCS8PrivateKey(ca.Key) }

// ParseCA rebuilds a CA from its certificate and PKCS#8 key, DER.
func ParseCA(certDER, keyDER []byte) (*CA, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("pki: CA key cannot sign")
	}
	if !cert.IsCA {
		return nil, errors.New("pki: certificate is not a CA")
	}
	return &CA{Cert: cert, Key: signer}, nil
}

// NewKeyCSR makes a node's key pair and a certificate request for nodeID
// signed with it, PEM. The key stays with the node; only the request
// travels.
func NewKeyCSR(nodeID string) (key crypto.Signer, csrPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrPEM, err = CSR(k, nodeID)
	return k, csrPEM, err
}

// CSR makes a certificate request for nodeID signed with key, PEM. A
// renewal sends one signed with the current certificate's key, which
// proves the sender holds it.
func CSR(key crypto.Signer, nodeID string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: nodeID}, DNSNames: []string{nodeID},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR reads a PEM certificate request and checks its signature.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("pki: no PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: certificate request signature: %w", err)
	}
	return csr, nil
}

// SamePublicKey reports whether a request carries a certificate's key.
func SamePublicKey(csr *x509.CertificateRequest, cert *x509.Certificate) bool {
	a, err1 := x509.MarshalPKIXPublicKey(csr.PublicKey)
	b, err2 := x509.MarshalPKIXPublicKey(cert.PublicKey)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// SignNode issues a node certificate for nodeID to the key in csr, valid
// from now (less clock skew) for validFor. The node ID comes from the
// caller (the join token or the current certificate), never from the
// request, whose names are ignored.
func (ca *CA) SignNode(csr *x509.CertificateRequest, nodeID string, validFor time.Duration) ([]byte, error) {
	if !validNodeID(nodeID) {
		return nil, ErrBadNodeID
	}
	tmpl := nodeTemplate(nodeID, nil, time.Now().Add(-clockSkew), time.Now().Add(validFor))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate for %s: %w", nodeID, err)
	}
	return der, nil
}

// CertPEM encodes a DER certificate as PEM.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseCertPEM reads the first certificate of a PEM block.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("pki: no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return c, nil
}

// PoolOf returns a pool holding certs.
func PoolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// Chain is a one-certificate chain, for VerifyNode.
func Chain(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c} }

// IssueServer signs a certificate for a service that is not a node (a
// control API, a NATS server): client and server auth, name as common
// name and DNS SAN, hosts as more SANs, and no node URI, so it can never
// act as a link peer.
func (ca *CA) IssueServer(name string, hosts []string, validFor time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := nodeTemplate(name, hosts, time.Now().Add(-clockSkew), time.Now().Add(validFor))
	tmpl.URIs = nil
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: sign certificate for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
