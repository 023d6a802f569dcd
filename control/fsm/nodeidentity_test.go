package fsm

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

const natsKey = "UCXF2TPTH2IA6ZT6ZPO6HMJPOIWCUFQQOFWH5XU6HG4ZW3XJK3WGBSTO"

func cmd(t *testing.T, f *FSM, index uint64, typ Type, msg proto.Message) *controlv1.Result {
	t.Helper()
	b, err := Encode(typ, msg)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(index, b)
}

func TestJoinTokenIsOneTimeAndExpires(t *testing.T) {
	f := New(Config{})
	if r := write(t, f, 1, "w", fleet()...); r.GetCode() != "" {
		t.Fatal(r)
	}
	h := HashToken("tok-1")
	if r := cmd(t, f, 2, TypeCreateJoinToken, &controlv1.CreateJoinToken{RequestId: "c1", NowUnixMs: 1000,
		Token: &controlv1.JoinToken{Hash: h, Node: "edge-new", Region: "eu", ExpiresUnixMs: 5000}}); r.GetCode() != "" {
		t.Fatal(r)
	}
	if r := cmd(t, f, 3, TypeRedeemJoinToken, &controlv1.RedeemJoinToken{RequestId: "r1", Hash: h, NatsKey: natsKey, NowUnixMs: 2000}); r.GetCode() != "" {
		t.Fatal(r)
	}
	id, ok := f.State().NodeIdentity("edge-new")
	if !ok || id.GetNatsKey() != natsKey || id.GetRegion() != "eu" {
		t.Fatalf("identity = %v", id)
	}
	if _, ok := f.State().Get(KindNode, "edge-new"); !ok {
		t.Fatal("redeeming did not add the node to the fleet")
	}
	r := cmd(t, f, 4, TypeRedeemJoinToken, &controlv1.RedeemJoinToken{RequestId: "r2", Hash: h, NatsKey: natsKey, NowUnixMs: 2100})
	if !errors.Is(ResultError(r), ErrConflict) || r.GetMessage() != MsgTokenUsed {
		t.Fatalf("second use = %v, want %q", r, MsgTokenUsed)
	}

	h2 := HashToken("tok-2")
	cmd(t, f, 5, TypeCreateJoinToken, &controlv1.CreateJoinToken{RequestId: "c2", NowUnixMs: 1000,
		Token: &controlv1.JoinToken{Hash: h2, Node: "n1", ExpiresUnixMs: 5000}})
	r = cmd(t, f, 6, TypeRedeemJoinToken, &controlv1.RedeemJoinToken{RequestId: "r3", Hash: h2, NatsKey: natsKey, NowUnixMs: 5000})
	if r.GetMessage() != MsgTokenExpired {
		t.Fatalf("expired token = %v", r)
	}
	r = cmd(t, f, 7, TypeRedeemJoinToken, &controlv1.RedeemJoinToken{RequestId: "r4", Hash: HashToken("nope"), NatsKey: natsKey, NowUnixMs: 10})
	if !errors.Is(ResultError(r), ErrNotFound) {
		t.Fatalf("unknown token = %v", r)
	}
	r = cmd(t, f, 8, TypeCreateJoinToken, &controlv1.CreateJoinToken{RequestId: "c3", NowUnixMs: 1000,
		Token: &controlv1.JoinToken{Hash: HashToken("tok-3"), Node: "ghost", ExpiresUnixMs: 5000}})
	if !errors.Is(ResultError(r), ErrReference) {
		t.Fatalf("token for an unknown node without a region = %v", r)
	}
}

func TestRevokeAndCASurviveSnapshot(t *testing.T) {
	f := New(Config{})
	write(t, f, 1, "w", fleet()...)
	ca := &controlv1.ClusterCA{CertDer: []byte("cert"), SealedKey: []byte("sealed")}
	if r := cmd(t, f, 2, TypeSetClusterCA, &controlv1.SetClusterCA{RequestId: "ca1", Ca: ca}); r.GetCode() != "" {
		t.Fatal(r)
	}
	r := cmd(t, f, 3, TypeSetClusterCA, &controlv1.SetClusterCA{RequestId: "ca2", Ca: &controlv1.ClusterCA{CertDer: []byte("x"), SealedKey: []byte("y")}})
	if !errors.Is(ResultError(r), ErrConflict) {
		t.Fatalf("second CA = %v", r)
	}
	pending := HashToken("pending")
	cmd(t, f, 3, TypeCreateJoinToken, &controlv1.CreateJoinToken{RequestId: "ct", NowUnixMs: 1,
		Token: &controlv1.JoinToken{Hash: pending, Node: "n1", ExpiresUnixMs: 1 << 40}})
	if r := cmd(t, f, 4, TypeRevokeNode, &controlv1.RevokeNode{RequestId: "rv", Node: "n1", NowUnixMs: 7}); r.GetCode() != "" {
		t.Fatal(r)
	}
	if r := cmd(t, f, 4, TypeRedeemJoinToken, &controlv1.RedeemJoinToken{RequestId: "rd", Hash: pending, NatsKey: natsKey, NowUnixMs: 8}); r.GetMessage() != MsgTokenUsed {
		t.Fatalf("a token issued before the revocation re-admitted the node: %v", r)
	}
	if r := cmd(t, f, 5, TypeRevokeNode, &controlv1.RevokeNode{RequestId: "rv2", Node: "ghost"}); !errors.Is(ResultError(r), ErrNotFound) {
		t.Fatalf("revoking an unknown node = %v", r)
	}
	var buf bytes.Buffer
	if _, err := f.State().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := New(Config{})
	if err := g.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if !g.State().Revoked("n1") {
		t.Fatal("revocation lost in the snapshot")
	}
	if got, ok := g.State().ClusterCA(); !ok || !proto.Equal(got, ca) {
		t.Fatalf("CA after restore = %v", got)
	}
	if r := write(t, g, 6, "w2", PutOp(&controlv1.Node{Id: "n2", Region: "eu", Revoked: true})); !errors.Is(ResultError(r), ErrInvalid) {
		t.Fatalf("writing revoked through the API = %v", r)
	}
}
