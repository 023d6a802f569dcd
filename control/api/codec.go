package api

import (
	"encoding/json"
	"regexp"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/fsm"
)

var (
	marshal   = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	unmarshal = protojson.UnmarshalOptions{} // rejects unknown fields
	// protojson names the field in its messages; pull it out so the
	// error carries it as a field.
	unknownField = regexp.MustCompile(`unknown field "([^"]+)"`)
	badField     = regexp.MustCompile(`field ([a-z_][a-z0-9_.]*)`)
)

// DecodeEntity reads an entity of the given kind from JSON and validates
// it on its own. Unknown fields are rejected. Errors are *fsm.Error with
// the offending field.
func DecodeEntity(kind *fsm.Kind, body []byte) (proto.Message, error) {
	m := kind.New()
	if err := unmarshal.Unmarshal(body, m); err != nil {
		return nil, jsonError(err)
	}
	if err := fsm.Validate(m); err != nil {
		return nil, err
	}
	return m, nil
}

func jsonError(err error) error {
	e := &fsm.Error{Code: fsm.CodeInvalid, Message: "malformed JSON: " + err.Error()}
	if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
		e.Field, e.Message = m[1], "unknown field"
	} else if m := badField.FindStringSubmatch(err.Error()); m != nil {
		e.Field = m[1]
	}
	return e
}

// EncodeEntity returns an entity's JSON form.
func EncodeEntity(m proto.Message) ([]byte, error) { return marshal.Marshal(m) }

// encodeList returns a JSON array of entities.
func encodeList(ms []proto.Message) ([]byte, error) {
	raw := make([]json.RawMessage, len(ms))
	for i, m := range ms {
		b, err := marshal.Marshal(m)
		if err != nil {
			return nil, err
		}
		raw[i] = b
	}
	return json.Marshal(raw)
}
