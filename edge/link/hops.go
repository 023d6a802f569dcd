package link

import "context"

type hopsKey struct{}

// WithHops returns ctx carrying n: the number of links the request it
// belongs to has crossed. The serving side sets it before calling its
// Handler; a Peer refuses to forward a request whose count has reached
// the transport's MaxHops.
func WithHops(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, hopsKey{}, n)
}

// Hops returns the links crossed by the request ctx belongs to; 0 for a
// request that came straight from a client.
func Hops(ctx context.Context) int {
	n, _ := ctx.Value(hopsKey{}).(int)
	return n
}

type callerKey struct{}

// Caller is who a forwarded request is for: the tenant and key the
// forwarding edge authenticated its client as. It crosses the link in
// the request's Header, so the serving edge records the request's usage
// under the right tenant.
type Caller struct {
	Tenant, Key string
	// Via is the node that forwarded the request, from its certificate;
	// set on the serving side only.
	Via string
}

// WithCaller returns ctx carrying c. The serving side sets it from the
// Header before calling its Handler; on the forwarding side a Peer sends
// the caller its Config.Caller finds, or the one in ctx.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller in ctx, the zero Caller when none.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}
