package table

import (
	"fmt"
	"strings"
)

// The cloud providers' kinds: each needs more than a base URL and a key,
// so their fields are checked here, apart from the plain kinds'.
const (
	// KindAzure is Azure OpenAI: OpenAI's wire format on deployment URLs
	// ({base}/openai/deployments/{deployment}/...?api-version=...), with
	// an api-key header or a Microsoft Entra ID bearer token.
	KindAzure = "azure"
	// KindBedrock is AWS Bedrock's Converse and ConverseStream APIs,
	// signed with SigV4 by credentials from the standard AWS chain.
	KindBedrock = "bedrock"
	// KindVertex is Google Vertex AI: Gemini models through
	// generateContent, Anthropic models through rawPredict, with a
	// service account's OAuth tokens.
	KindVertex = "vertex"
)

// Azure auth modes (Provider.Auth).
const (
	AuthAPIKey = "api-key"
	AuthEntra  = "entra"
)

// DefaultAzureAPIVersion is the api-version an azure provider sends when
// its APIVersion is empty: the newest generally available one that has
// every field the OpenAI adapter forwards.
const DefaultAzureAPIVersion = "2024-10-21"

func init() { knownKinds = append(knownKinds, KindAzure, KindBedrock, KindVertex) }

// CloudRegionOf is where a bedrock or vertex provider runs in its
// cloud's own terms: CloudRegion, else Region.
func (p *Provider) CloudRegionOf() string {
	if p.CloudRegion != "" {
		return p.CloudRegion
	}
	return p.Region
}

// CloudBaseURL is the regional endpoint of a bedrock or vertex provider
// in cloudRegion, or "" for the other kinds, which have no derived URL.
func CloudBaseURL(kind, cloudRegion string) string {
	switch {
	case cloudRegion == "":
		return ""
	case kind == KindBedrock:
		return "https://bedrock-runtime." + cloudRegion + ".amazonaws.com"
	case kind == KindVertex && cloudRegion == "global":
		return "https://aiplatform.googleapis.com"
	case kind == KindVertex:
		return "https://" + cloudRegion + "-aiplatform.googleapis.com"
	}
	return ""
}

// fillCloudBaseURL derives an empty base URL of a bedrock or vertex
// provider from its cloud region; a given base URL (a proxy, a private
// endpoint, a test server) wins.
func fillCloudBaseURL(p *Provider) error {
	if p.BaseURL != "" || (p.Kind != KindBedrock && p.Kind != KindVertex) {
		return nil
	}
	if err := checkCloudRegion(p.CloudRegionOf()); err != nil {
		return nil // checkCloud names the field
	}
	p.BaseURL = CloudBaseURL(p.Kind, p.CloudRegionOf())
	return nil
}

// checkCloudRegion accepts the shape every AWS and Google region name
// has, lowercase letters, digits and dashes, because it becomes part of
// a host name.
func checkCloudRegion(r string) error {
	if r == "" || len(r) > 40 {
		return fmt.Errorf("is required")
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q is not a cloud region name (lowercase letters, digits and dashes)", r)
		}
	}
	return nil
}

// checkProject accepts Google Cloud project IDs (6 to 30 lowercase
// letters, digits and dashes) and the numeric project numbers.
func checkProject(s string) error {
	if s == "" {
		return fmt.Errorf("is required for kind %q", KindVertex)
	}
	if len(s) > 30 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return fmt.Errorf("%q is not a Google Cloud project ID", s)
	}
	return nil
}

// checkCloud checks the fields that only some kinds take: each is
// required where its kind needs it and refused elsewhere, so a typo in
// the kind is not silently ignored. field is "providers[i]".
func checkCloud(p *Provider, field string) error {
	bad := func(f string, format string, args ...any) error {
		return &FieldError{Field: field + "." + f, Msg: fmt.Sprintf(format, args...)}
	}
	if p.APIVersion != "" && p.Kind != KindAzure {
		return bad("api_version", "is only for kind %q", KindAzure)
	}
	if p.APIVersion != "" && strings.Trim(p.APIVersion, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return bad("api_version", "%q is not an Azure api-version such as %q", p.APIVersion, DefaultAzureAPIVersion)
	}
	if p.Project != "" && p.Kind != KindVertex {
		return bad("project", "is only for kind %q", KindVertex)
	}
	if p.CloudRegion != "" && p.Kind != KindBedrock && p.Kind != KindVertex {
		return bad("cloud_region", "is only for kinds %q and %q", KindBedrock, KindVertex)
	}
	switch p.Auth {
	case "":
	case AuthAPIKey, AuthEntra:
		if p.Kind != KindAzure {
			return bad("auth", "is only for kind %q", KindAzure)
		}
	default:
		return bad("auth", "must be %q or %q, not %q", AuthAPIKey, AuthEntra, p.Auth)
	}
	if p.TokenFile != "" && p.Auth != AuthEntra {
		return bad("token_file", "is only for auth %q", AuthEntra)
	}
	switch p.Kind {
	case KindBedrock, KindVertex:
		// A cloud region is where requests are processed: residency
		// routing needs to know it, as it knows a PoP's.
		if p.Region == "" {
			return bad("region", "is required for kind %q: it is where the provider processes requests", p.Kind)
		}
		if err := checkCloudRegion(p.CloudRegionOf()); err != nil {
			return bad("cloud_region", "%v", err)
		}
		if p.Kind == KindVertex {
			if err := checkProject(p.Project); err != nil {
				return bad("project", "%v", err)
			}
		}
	}
	return nil
}
