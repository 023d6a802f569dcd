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
