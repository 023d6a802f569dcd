package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/cluster"
)

// JoinToken creates a one-time join token for node (in region, for a node
// not yet in the fleet), valid for ttl (0: the server's default, 1h).
func (c *Client) JoinToken(ctx context.Context, node, region string, ttl time.Duration) (*api.TokenResponse, error) {
	body, _ := json.Marshal(api.TokenRequest{Node: node, Region: region, TTLSeconds: int64(ttl / time.Second)})
	resp, err := c.Do(ctx, http.MethodPost, "/v1/control/identity/tokens", body, cluster.NewUUID())
	if err != nil {
		return nil, err
	}
	var tr api.TokenResponse
	if err := json.Unmarshal(resp.Body, &tr); err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	return &tr, nil
}

// RevokeNode revokes a node's identity.
func (c *Client) RevokeNode(ctx context.Context, node string) (uint64, error) {
	resp, err := c.Do(ctx, http.MethodPost, "/v1/control/identity/revoke/"+url.PathEscape(node), nil, cluster.NewUUID())
	if err != nil {
		return 0, err
	}
	return writeIndex(resp), nil
}

// Identities lists the nodes that joined, revoked ones included.
func (c *Client) Identities(ctx context.Context) ([]api.IdentityNode, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/v1/control/identity/nodes", nil, "")
	if err != nil {
		return nil, err
	}
	var out []api.IdentityNode
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		return nil, fmt.Errorf("identities: %w", err)
	}
	return out, nil
}
