package api_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/meridian-mesh/meridian/control/fsm"
)

// TestOpenAPIMatchesEntities keeps proto/control/v1/openapi.yaml in step
// with the entities: every kind is listed, and every entity schema has
// exactly the message's fields.
func TestOpenAPIMatchesEntities(t *testing.T) {
	raw, err := os.ReadFile("../../proto/control/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Parameters map[string]struct {
				Schema struct {
					Enum []string `yaml:"enum"`
				} `yaml:"schema"`
			} `yaml:"parameters"`
			Schemas map[string]struct {
				Properties map[string]any `yaml:"properties"`
				Enum       []string       `yaml:"enum"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	enum := doc.Components.Parameters["Kind"].Schema.Enum
	for _, k := range fsm.Kinds {
		if !slices.Contains(doc.Components.Schemas["EntityKind"].Enum, k.Name) {
			t.Errorf("kind %s missing from the EntityKind schema", k.Name)
		}
		if !slices.Contains(enum, k.Plural) {
			t.Errorf("kind %s missing from the Kind parameter", k.Plural)
		}
		name := strings.ToUpper(k.Name[:1]) + k.Name[1:]
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("no schema %s", name)
			continue
		}
		fields := k.New().ProtoReflect().Descriptor().Fields()
		var want []string
		for i := 0; i < fields.Len(); i++ {
			want = append(want, string(fields.Get(i).Name()))
		}
		var got []string
		for p := range schema.Properties {
			got = append(got, p)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("schema %s has %v, the message has %v", name, got, want)
		}
	}
}
