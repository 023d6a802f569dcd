package api

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/seal"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/pki"
)

// Fleet identity endpoints (the cluster CA, join tokens, node
// certificates and revocation). They need Config.KEK; without it they
// answer 501 and the fleet runs on static certificates.
//
//	POST /v1/control/identity/tokens        admin: a one-time join token
//	POST /v1/control/identity/revoke/{node} admin: revoke a node
//	GET  /v1/control/identity/nodes         read: joined nodes
//	POST /v1/control/identity/join          join token: first certificate
//	POST /v1/control/identity/renew         current certificate: a new one
//	GET  /v1/control/identity/ca            open: the CA certificate

// Identity defaults.
const (
	DefaultNodeCertTTL  = 12 * time.Hour
	DefaultJoinTokenTTL = time.Hour
	MaxJoinTokenTTL     = 7 * 24 * time.Hour
	caValidity          = 10 * 365 * 24 * time.Hour
)

// CodeNoIdentity means this control plane runs no cluster CA (no KEK).
const CodeNoIdentity = "identity_disabled"

// TokenRequest is POST /v1/control/identity/tokens.
type TokenRequest struct {
	Node string `json:"node"`
	// Region for a node not yet in the fleet.
	Region string `json:"region,omitempty"`
	// TTLSeconds is how long the token may be used; default 3600.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// TokenResponse carries a new join token. It is shown once: the control
// plane keeps only its hash.
type TokenResponse struct {
	Token     string    `json:"token"`
	Node      string    `json:"node"`
	ExpiresAt time.Time `json:"expires_at"`
}

// NodeJoinRequest is POST /v1/control/identity/join.
type NodeJoinRequest struct {
	Token string `json:"token"`
	// CSR is a PEM certificate request signed with the edge's new key.
	CSR string `json:"csr"`
	// NATSKey is the edge's NATS user public nkey ("U...").
	NATSKey string `json:"nats_key"`
}

// RenewRequest is POST /v1/control/identity/renew: the current
// certificate and a request signed with its key.
type RenewRequest struct {
	Certificate string `json:"certificate"`
	CSR         string `json:"csr"`
}

// Credentials answer a join or a renewal.
type Credentials struct {
	Node string `json:"node"`
	// Certificate and CA are PEM.
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	ExpiresAt   time.Time `json:"expires_at"`
	// ClusterID and TablePublicKeys are what an edge would otherwise pin
	// (control.cluster_id, control.table_public_keys): the current
	// table-signing key, then a staged one. The join channel is as
	// trusted as pinning them: the edge checks the API's certificate
	// (or talks over loopback) and the token or current certificate
	// authenticates it.
	ClusterID       string   `json:"cluster_id"`
	TablePublicKeys []string `json:"table_public_keys"`
}

// tableTrust waits, up to the hold timeout, for the cluster identity
// the first leader creates once elected, so an edge that joins a new
// control plane is not refused for arriving a moment early.
func (s *Server) tableTrust(r *http.Request) (*controlv1.ClusterIdentity, error) {
	deadline := time.Now().Add(s.cfg.HoldTimeout)
	for {
		changed := s.node.FSM().Watch()
		if id := s.node.FSM().State().Identity(); id != nil {
			return id, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, &fsm.Error{Code: CodeNoLeader, Message: "no table-signing key yet: the first leader creates it once elected; retry"}
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		if r.Context().Err() != nil {
			return nil, r.Context().Err()
		}
	}
}

func (s *Server) identityRoutes() {
	s.mux.Handle("POST /v1/control/identity/tokens", s.auth(roleAdmin, s.createToken))
	s.mux.Handle("POST /v1/control/identity/revoke/{node}", s.auth(roleAdmin, s.revokeNode))
	s.mux.Handle("GET /v1/control/identity/nodes", s.auth(roleRead, s.identityNodes))
	s.mux.HandleFunc("POST /v1/control/identity/join", s.joinNode)
	s.mux.HandleFunc("POST /v1/control/identity/renew", s.renewNode)
	s.mux.HandleFunc("GET /v1/control/identity/ca", s.caCert)
}

func (s *Server) identityOn(w http.ResponseWriter) bool {
	if s.cfg.KEK == nil {
		writeError(w, http.StatusNotImplemented, &fsm.Error{Code: CodeNoIdentity,
			Message: "this control plane runs no cluster CA: set a key-encryption key (-kek-file)"})
		return false
	}
	return true
}

// clusterCA opens the CA in the state, creating it through Raft first
// when there is none (only on the leader: the caller runs in onLeader).
func (s *Server) clusterCA(create bool) (*pki.CA, error) {
	for range 2 {
		if c, ok := s.node.FSM().State().ClusterCA(); ok {
			key, err := s.cfg.KEK.Open(c.GetSealedKey(), seal.AADClusterCAKey)
			if err != nil {
				return nil, fmt.Errorf("open the cluster CA key (is the KEK the one it was sealed with?): %w", err)
			}
			return pki.ParseCA(c.GetCertDer(), key)
		}
		if !create {
			return nil, &fsm.Error{Code: CodeNoIdentity, Message: "the cluster CA does not exist yet: create a join token first"}
		}
		ca, err := pki.NewCA("Meridian cluster CA", caValidity)
		if err != nil {
			return nil, err
		}
		der, err := ca.MarshalKey()
		if err != nil {
			return nil, err
		}
		sealed, err := s.cfg.KEK.Seal(der, seal.AADClusterCAKey)
		if err != nil {
			return nil, err
		}
		res, err := s.node.Apply(fsm.TypeSetClusterCA, &controlv1.SetClusterCA{RequestId: cluster.NewUUID(),
			Ca: &controlv1.ClusterCA{CertDer: ca.Cert.Raw, SealedKey: sealed}})
		if err != nil {
			return nil, err
		}
		if err := fsm.ResultError(res); err != nil && !errors.Is(err, fsm.ErrConflict) {
			return nil, err
		}
		s.cfg.Logger.Info("created the cluster CA")
	}
	return nil, errors.New("the cluster CA was not recorded")
}

func newJoinToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "mjt_" + base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	if !s.identityOn(w) {
		return
	}
	body, ok := readBody(w, r, s.cfg.MaxBody)
	if !ok {
		return
	}
	var req TokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Message: "body: " + err.Error()})
		return
	}
	ttl := DefaultJoinTokenTTL
	if req.TTLSeconds != 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	if ttl <= 0 || ttl > MaxJoinTokenTTL {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "ttl_seconds", Message: fmt.Sprintf("must be from 1 to %d", int64(MaxJoinTokenTTL/time.Second))})
		return
	}
	s.onLeader(w, r, body, func() error {
		if _, err := s.clusterCA(true); err != nil {
			return err
		}
		tok, now := newJoinToken(), time.Now()
		exp := now.Add(ttl)
		res, err := s.node.Apply(fsm.TypeCreateJoinToken, &controlv1.CreateJoinToken{RequestId: cluster.NewUUID(), NowUnixMs: now.UnixMilli(),
			Token: &controlv1.JoinToken{Hash: fsm.HashToken(tok), Node: req.Node, Region: req.Region, ExpiresUnixMs: exp.UnixMilli()}})
		if err != nil {
			return err
		}
		if err := fsm.ResultError(res); err != nil {
			fail(w, err)
			return nil
		}
		writeJSON(w, http.StatusCreated, TokenResponse{Token: tok, Node: req.Node, ExpiresAt: exp.UTC()})
		return nil
	})
}

func (s *Server) revokeNode(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	s.onLeader(w, r, nil, func() error {
		res, err := s.node.Apply(fsm.TypeRevokeNode, &controlv1.RevokeNode{RequestId: cluster.NewUUID(), Node: node, NowUnixMs: time.Now().UnixMilli()})
		if err != nil {
			return err
		}
		if err := fsm.ResultError(res); err != nil {
			fail(w, err)
			return nil
		}
		s.cfg.Logger.Info("revoked a node", "node", node)
		writeJSON(w, http.StatusOK, WriteResult{Index: res.GetIndex()})
		return nil
	})
}

// IdentityNode is one row of GET /v1/control/identity/nodes.
type IdentityNode struct {
	Node      string     `json:"node"`
	Region    string     `json:"region,omitempty"`
	NATSKey   string     `json:"nats_key,omitempty"`
	JoinedAt  *time.Time `json:"joined_at,omitempty"`
	Revoked   bool       `json:"revoked,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func msTime(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

func (s *Server) identityNodes(w http.ResponseWriter, r *http.Request) {
	out := []IdentityNode{}
	for _, n := range s.node.FSM().State().NodeIdentities() {
		out = append(out, IdentityNode{Node: n.GetNode(), Region: n.GetRegion(), NATSKey: n.GetNatsKey(),
			JoinedAt: msTime(n.GetJoinedUnixMs()), Revoked: n.GetRevoked(), RevokedAt: msTime(n.GetRevokedUnixMs())})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) caCert(w http.ResponseWriter, r *http.Request) {
	c, ok := s.node.FSM().State().ClusterCA()
	if !ok {
		writeError(w, http.StatusNotFound, &fsm.Error{Code: fsm.CodeNotFound, Message: "no cluster CA yet"})
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(pki.CertPEM(c.GetCertDer()))
}

func (s *Server) certTTL() time.Duration {
	if s.cfg.NodeCertTTL > 0 {
		return s.cfg.NodeCertTTL
	}
	return DefaultNodeCertTTL
}

func (s *Server) issue(w http.ResponseWriter, ca *pki.CA, trust *controlv1.ClusterIdentity, node string, csrPEM string) {
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "csr", Message: err.Error()})
		return
	}
	der, err := ca.SignNode(csr, node, s.certTTL())
	if err != nil {
		fail(w, err)
		return
	}
	k := tableKeyOf(trust)
	keys := []string{k.PublicKey}
	if k.NextPublicKey != "" {
		keys = append(keys, k.NextPublicKey)
	}
	writeJSON(w, http.StatusOK, Credentials{Node: node, Certificate: string(pki.CertPEM(der)),
		CA: string(pki.CertPEM(ca.Cert.Raw)), ExpiresAt: time.Now().Add(s.certTTL()).UTC(),
		ClusterID: k.ClusterID, TablePublicKeys: keys})
}

// joinNode redeems a join token on the leader, then signs the edge's
// request. The token is the only credential: it is checked before
// anything is signed, and a second use is refused.
func (s *Server) joinNode(w http.ResponseWriter, r *http.Request) {
	if !s.identityOn(w) {
		return
	}
	body, ok := readBody(w, r, 64<<10)
	if !ok {
		return
	}
	var req NodeJoinRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Message: "body: " + err.Error()})
		return
	}
	if _, err := nkeys.FromPublicKey(req.NATSKey); err != nil || !strings.HasPrefix(req.NATSKey, "U") {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "nats_key", Message: "must be a NATS user public nkey"})
		return
	}
	if _, err := pki.ParseCSR([]byte(req.CSR)); err != nil {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "csr", Message: err.Error()})
		return
	}
	hash := fsm.HashToken(req.Token)
	s.onLeader(w, r, body, func() error {
		// Refuse what the leader's state already refuses without a Raft
		// write, so guessing tokens costs the cluster no log entries.
		if t, ok := s.node.FSM().State().JoinToken(hash); !ok || t.GetUsed() || t.GetExpiresUnixMs() <= time.Now().UnixMilli() {
			msg, status := fsm.MsgTokenUnknown, http.StatusUnauthorized
			switch {
			case ok && t.GetUsed():
				msg, status = fsm.MsgTokenUsed, http.StatusConflict
			case ok:
				msg = fsm.MsgTokenExpired
			}
			s.cfg.Logger.Warn("refused a join", "reason", msg)
			writeError(w, status, &fsm.Error{Code: CodeUnauthorized, Field: "token", Message: msg})
			return nil
		}
		ca, err := s.clusterCA(false)
		if err != nil {
			return err
		}
		// Before the token is spent: an edge refused here may retry it.
		trust, err := s.tableTrust(r)
		if err != nil {
			return err
		}
		res, err := s.node.Apply(fsm.TypeRedeemJoinToken, &controlv1.RedeemJoinToken{RequestId: cluster.NewUUID(), Hash: hash,
			NatsKey: req.NATSKey, NowUnixMs: time.Now().UnixMilli()})
		if err != nil {
			return err
		}
		if err := fsm.ResultError(res); err != nil {
			s.cfg.Logger.Warn("refused a join", "reason", res.GetMessage())
			status := http.StatusUnauthorized
			if errors.Is(err, fsm.ErrConflict) {
				status = http.StatusConflict
			} else if errors.Is(err, fsm.ErrReference) {
				status = http.StatusBadRequest
			}
			writeError(w, status, &fsm.Error{Code: CodeUnauthorized, Field: "token", Message: res.GetMessage()})
			return nil
		}
		t, _ := s.node.FSM().State().JoinToken(hash)
		s.cfg.Logger.Info("node joined", "node", t.GetNode())
		s.issue(w, ca, trust, t.GetNode(), req.CSR)
		return nil
	})
}

// renewNode issues a new certificate to a node that proves it holds a
// current, unrevoked one: its request must be signed by that
// certificate's key. Any control node can answer; no Raft write.
func (s *Server) renewNode(w http.ResponseWriter, r *http.Request) {
	if !s.identityOn(w) {
		return
	}
	body, ok := readBody(w, r, 64<<10)
	if !ok {
		return
	}
	var req RenewRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Message: "body: " + err.Error()})
		return
	}
	ca, err := s.clusterCA(false)
	if err != nil {
		fail(w, err)
		return
	}
	deny := func(why string) {
		s.cfg.Logger.Warn("refused a certificate renewal", "reason", why)
		writeError(w, http.StatusUnauthorized, &fsm.Error{Code: CodeUnauthorized, Message: why})
	}
	cert, err := pki.ParseCertPEM([]byte(req.Certificate))
	if err != nil {
		deny(err.Error())
		return
	}
	node, err := pki.VerifyNode([]*x509.Certificate{cert}, ca.Pool(), time.Now())
	if err != nil {
		deny("the current certificate does not verify: " + err.Error())
		return
	}
	csr, err := pki.ParseCSR([]byte(req.CSR))
	if err != nil || !pki.SamePublicKey(csr, cert) {
		deny("the request is not signed with the current certificate's key")
		return
	}
	id, ok := s.node.FSM().State().NodeIdentity(node)
	switch {
	case !ok:
		deny("node " + node + " never joined")
		return
	case id.GetRevoked():
		deny("node " + node + " is revoked")
		return
	case cert.NotBefore.Add(pki.ClockSkew).UnixMilli() < id.GetJoinedUnixMs()-1000:
		// Issued before the node's latest join: an older identity.
		deny("the certificate predates the node's latest join")
		return
	}
	trust, err := s.tableTrust(r)
	if err != nil {
		fail(w, err)
		return
	}
	s.issue(w, ca, trust, node, req.CSR)
}
