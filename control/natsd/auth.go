package natsd

import (
	"crypto/subtle"
	"encoding/base64"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// Identities tells the server which edges may connect: each edge signs
// the server's nonce with its own nkey, whose public key was registered
// in the control plane's replicated state when it joined.
type Identities interface {
	// EdgeByKey returns the node a NATS user public key belongs to, and
	// false for an unknown or revoked key.
	EdgeByKey(pub string) (node string, ok bool)
}

// EdgePermissions are an edge identity's subject permissions: it reads
// the tables and heartbeats, asks for snapshots and reads the replies in
// its own inbox, publishes only its own reports, usage records and limit
// reports, and reads every edge's limit reports. It can publish no
// table, no heartbeat and no other edge's report or usage.
//
// Usage records go to JetStream by a plain publish on the edge's usage
// subject, which the stream captures; the stream's acknowledgement comes
// back to the reply subject the edge chose, in its own inbox. The edge
// gets no JetStream API subject ($JS.API.>): it cannot create, purge or
// delete a stream nor read another edge's records.
//
// Batches (shared/jobswire) need more of JetStream: an edge serves the
// Files and Batches APIs and runs lines, so it reads and writes the batch
// streams' messages, creates and reads their consumers, and purges the
// work and file streams (a cancelled batch's lines, a replaced file's
// chunks). It may not create, update or delete those streams, and no
// JetStream API of any other stream is open to it.
func EdgePermissions(node string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append([]string{
			tablewire.SubjectSnapshot, tablewire.ReportSubject(node),
			usagewire.UsageSubject(node), usagewire.LimitsSubject(node),
		}, jobsPublish()...)},
		Subscribe: &server.SubjectPermission{Allow: []string{
			tablewire.SubjectUpdate, tablewire.SubjectHeartbeat, tablewire.InboxPrefix(node) + ".>",
			usagewire.LimitsSubjects,
		}},
	}
}

// LeafPermissions bound a regional leaf node's connection to the hub
// (control/leaf), written from the leaf's side: it may carry what the
// edges behind it may do together (every node's reports, usage and
// limit reports, snapshot requests; tables, heartbeats and replies in
// any edge's inbox back) and nothing a control node alone may do, such
// as publishing a table or a heartbeat. The leaf enforces each edge's
// own EdgePermissions itself. NATS reverses the directions on the hub's
// side of the connection.
func LeafPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			tablewire.SubjectSnapshot, tablewire.SubjectApplied, tablewire.SubjectApplied + ".*",
			usagewire.UsageSubjects, usagewire.LimitsSubjects,
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			tablewire.SubjectUpdate, tablewire.SubjectHeartbeat, "_INBOX.>", usagewire.LimitsSubjects,
		}},
	}
}

// jobsPublish is what an edge may publish for batches: their messages,
// and the JetStream API of the batch streams short of creating, updating
// or deleting them.
func jobsPublish() []string {
	out := []string{
		jobswire.LinesSubjects, jobswire.HooksSubjects, "$KV." + jobswire.Batches + ".>", "$KV." + jobswire.Results + ".>", "$O." + jobswire.Files + ".>",
		"$JS.API.STREAM.PURGE." + jobswire.Stream, "$JS.API.STREAM.PURGE.OBJ_" + jobswire.Files,
	}
	for _, st := range []string{jobswire.Stream, "KV_" + jobswire.Batches, "KV_" + jobswire.Results, "OBJ_" + jobswire.Files} {
		out = append(out,
			"$JS.API.STREAM.INFO."+st, "$JS.API.STREAM.MSG.GET."+st,
			"$JS.API.DIRECT.GET."+st, "$JS.API.DIRECT.GET."+st+".>",
			"$JS.API.CONSUMER.CREATE."+st, "$JS.API.CONSUMER.CREATE."+st+".>",
			"$JS.API.CONSUMER.INFO."+st+".*", "$JS.API.CONSUMER.LIST."+st, "$JS.API.CONSUMER.NAMES."+st,
			"$JS.API.CONSUMER.MSG.NEXT."+st+".*", "$JS.ACK."+st+".>", "$JS.FC."+st+".>")
		if st != jobswire.Stream {
			// The key-value and object clients' watchers and readers are
			// consumers of their own, which they delete when done. The
			// work stream's per-model consumers are shared: never deleted.
			out = append(out, "$JS.API.CONSUMER.DELETE."+st+".*")
		}
	}
	return out
}

// auth authenticates clients: the control credential (token, or user and
// password) gets every permission, an edge's nkey gets EdgePermissions;
// and leaf connections: the leaf credential gets LeafPermissions.
// It is nats-server's CustomClientAuthentication, which replaces the
// server's own client authentication; routes keep theirs.
type auth struct {
	user, pass, token []byte
	ids               Identities
	// leafPass admits regional leaf nodes (user LeafUser) on the leaf
	// listener, with LeafPermissions; nil: no leaf is admitted.
	leafPass []byte
}

var _ server.Authentication = (*auth)(nil)

func (a *auth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if c.Kind() == server.LEAF {
		// A leaf connection authenticates with the leaf credential
		// only, and a client never does.
		if len(a.leafPass) == 0 || o.Username != LeafUser ||
			subtle.ConstantTimeCompare([]byte(o.Password), a.leafPass) != 1 {
			return false
		}
		c.RegisterUser(&server.User{Username: LeafUser, Permissions: LeafPermissions()})
		return true
	}
	switch {
	case o.Nkey != "" && a.ids != nil:
		node, ok := a.ids.EdgeByKey(o.Nkey)
		if !ok {
			return false
		}
		pub, err := nkeys.FromPublicKey(o.Nkey)
		if err != nil {
			return false
		}
		sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
		if err != nil {
			if sig, err = base64.StdEncoding.DecodeString(o.Sig); err != nil {
				return false
			}
		}
		nonce := c.GetNonce()
		if len(nonce) == 0 || pub.Verify(nonce, sig) != nil {
			return false
		}
		c.RegisterUser(&server.User{Username: "edge:" + node, Permissions: EdgePermissions(node)})
		return true
	case len(a.token) > 0 && o.Token != "":
		return subtle.ConstantTimeCompare([]byte(o.Token), a.token) == 1
	case len(a.user) > 0 && o.Username != "":
		u := subtle.ConstantTimeCompare([]byte(o.Username), a.user)
		p := subtle.ConstantTimeCompare([]byte(o.Password), a.pass)
		return u&p == 1
	}
	return false
}

// Refresh closes every edge connection whose key was revoked or replaced
// since it connected; call it when the identities change. New connections
// are checked against the current identities anyway. It returns how many
// it closed.
func (s *Server) Refresh() int {
	if s.auth.ids == nil {
		return 0
	}
	cz, err := s.ns.Connz(&server.ConnzOptions{Username: true, Limit: 1 << 30})
	if err != nil {
		return 0
	}
	n := 0
	for _, c := range cz.Conns {
		key := c.AuthorizedUser
		if !strings.HasPrefix(key, "U") || len(key) != 56 {
			continue
		}
		if _, ok := s.auth.ids.EdgeByKey(key); !ok && s.ns.DisconnectClientByID(c.Cid) == nil {
			n++
		}
	}
	return n
}
