package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

func (c *cli) entity(ctx context.Context, pos []string) error {
	k, ok := fsm.KindByName(pos[0])
	if !ok {
		return fmt.Errorf("%w: unknown command or kind %q", errUsage, pos[0])
	}
	if len(pos) < 2 {
		return fmt.Errorf("%w: %s needs a verb: ls, get, set or rm", errUsage, k.Name)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	verb, rest := pos[1], pos[2:]
	if verb == "new" || verb == "set" {
		extra, err := c.limitAssigns(k.Name, time.Now())
		if err != nil {
			return err
		}
		if len(rest) > 0 {
			rest = append(rest, extra...)
		}
	}
	switch verb {
	case "disable", "enable":
		if k.Name != fsm.KindKey || len(rest) != 1 {
			return fmt.Errorf("%w: key %s takes one key ID", errUsage, verb)
		}
		return c.setDisabled(ctx, cl, rest[0], verb == "disable")
	case "ls", "list":
		if len(rest) != 0 {
			return fmt.Errorf("%w: %s ls takes no arguments", errUsage, k.Name)
		}
		if k.Name == fsm.KindPlacement {
			return c.placements(ctx, cl)
		}
		ms, _, err := cl.List(ctx, k.Name, c.readOpts())
		if err != nil {
			return err
		}
		return c.printEntities(k, ms, true)
	case "get":
		if len(rest) != 1 {
			return fmt.Errorf("%w: %s get takes one ID", errUsage, k.Name)
		}
		m, err := cl.Get(ctx, k.Name, rest[0], c.readOpts())
		if err != nil {
			return err
		}
		return c.printEntities(k, []proto.Message{m}, false)
	case "rm", "delete":
		if len(rest) != 1 {
			return fmt.Errorf("%w: %s rm takes one ID", errUsage, k.Name)
		}
		idx, err := cl.Delete(ctx, k.Name, rest[0], client.WriteOptions{})
		if err != nil {
			return err
		}
		return c.done(fmt.Sprintf("deleted %s %s", k.Name, rest[0]), idx)
	case "new":
		if k.Name != fsm.KindKey || len(rest) < 1 {
			return fmt.Errorf("%w: only keys have new: key new ID [--tenant T] [field=value ...]", errUsage)
		}
		return c.newKey(ctx, cl, k, rest[0], rest[1:])
	case "set":
		if len(rest) < 1 {
			return fmt.Errorf("%w: %s set takes an ID and field=value pairs", errUsage, k.Name)
		}
		m, err := c.buildEntity(ctx, cl, k, rest[0], rest[1:])
		if err != nil {
			return err
		}
		idx, err := cl.Put(ctx, m, client.WriteOptions{})
		if err != nil {
			return err
		}
		return c.done(fmt.Sprintf("set %s %s", k.Name, k.ID(m)), idx)
	}
	return fmt.Errorf("%w: unknown verb %q for %s (ls, get, set, rm)", errUsage, verb, k.Name)
}

// newKey makes a random client API key, stores only its hash, and prints
// the key once.
func (c *cli) newKey(ctx context.Context, cl *client.Client, k *fsm.Kind, id string, assigns []string) error {
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	key := "mk-" + hex.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(key))
	m, err := c.buildEntity(ctx, cl, k, id, append([]string{"hash=sha256:" + hex.EncodeToString(sum[:])}, assigns...))
	if err != nil {
		return err
	}
	if _, err := cl.Create(ctx, m, client.WriteOptions{}); err != nil {
		return err
	}
	if c.json {
		return json.NewEncoder(c.stdout).Encode(map[string]string{"id": id, "key": key, "hash": m.(*controlv1.Key).GetHash()})
	}
	fmt.Fprintf(c.stdout, "created key %s\n%s\nThis is the only time the key is shown: only its hash is stored.\n", id, key)
	return nil
}

func (c *cli) done(what string, idx uint64) error {
	if c.json {
		return json.NewEncoder(c.stdout).Encode(map[string]any{"result": what, "index": idx})
	}
	fmt.Fprintf(c.stdout, "%s (index %d)\n", what, idx)
	return nil
}

// buildEntity makes the entity a set writes: the file's, or the current
// one (or a new one) with the assignments applied.
func (c *cli) buildEntity(ctx context.Context, cl *client.Client, k *fsm.Kind, id string, assigns []string) (proto.Message, error) {
	var obj map[string]any
	if c.file != "" {
		raw, err := readFile(c.stdin, c.file)
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("%s: %w", c.file, err)
		}
	} else {
		cur, err := cl.Get(ctx, k.Name, id, c.readOpts())
		var apiErr *client.Error
		switch {
		case err == nil:
			b, _ := api.EncodeEntity(cur)
			if err := json.Unmarshal(b, &obj); err != nil {
				return nil, err
			}
		case errors.As(err, &apiErr) && apiErr.Status == 404 && apiErr.Field == "id":
			obj = map[string]any{}
		default:
			return nil, err
		}
	}
	if obj == nil {
		obj = map[string]any{}
	}
	setID(k, obj, id)
	if _, ok := obj["desired"]; !ok && k.Name == fsm.KindPlacement {
		// One instance unless told otherwise, so placing a model on a
		// node takes only the model and the node.
		obj["desired"] = 1
	}
	desc := k.New().ProtoReflect().Descriptor()
	for _, a := range assigns {
		path, value, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not field=value", errUsage, a)
		}
		if err := assign(desc, obj, strings.Split(path, "."), value); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	m, err := api.DecodeEntity(k, b)
	if err != nil {
		return nil, err
	}
	if got := k.ID(m); got != id {
		return nil, fmt.Errorf("the entity is %s %q, not %q", k.Name, got, id)
	}
	return m, nil
}

func setID(k *fsm.Kind, obj map[string]any, id string) {
	switch k.Name {
	case fsm.KindRoute:
		obj["model"] = id
	case fsm.KindPrice:
		provider, model, _ := strings.Cut(id, "/")
		obj["provider"], obj["model"] = provider, model
	default:
		obj["id"] = id
	}
}

// assign sets one field=value in a JSON object, typed by the entity's
// protobuf descriptor.
func assign(desc protoreflect.MessageDescriptor, obj map[string]any, path []string, value string) error {
	fd := desc.Fields().ByName(protoreflect.Name(path[0]))
	if fd == nil {
		var names []string
		for i := 0; i < desc.Fields().Len(); i++ {
			names = append(names, string(desc.Fields().Get(i).Name()))
		}
		return fmt.Errorf("no field %q (fields: %s)", path[0], strings.Join(names, ", "))
	}
	name := string(fd.Name())
	if len(path) > 1 {
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			return fmt.Errorf("%s has no sub-fields", name)
		}
		sub, _ := obj[name].(map[string]any)
		if sub == nil {
			sub = map[string]any{}
		}
		obj[name] = sub
		return assign(fd.Message(), sub, path[1:], value)
	}
	if value == "" {
		delete(obj, name)
		return nil
	}
	switch {
	case fd.IsMap():
		m := map[string]any{}
		for _, kv := range strings.Split(value, ",") {
			k, v, ok := strings.Cut(kv, ":")
			if !ok {
				return fmt.Errorf("%q is not key:value", kv)
			}
			m[k] = v
		}
		obj[name] = m
	case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
		var list []any
		for _, item := range strings.Split(value, ",") {
			// provider[:model][=weight]: neither IDs nor model IDs hold
			// '=', and provider IDs hold no ':'.
			item, weight, weighted := strings.Cut(item, "=")
			provider, model, _ := strings.Cut(item, ":")
			t := map[string]any{"provider": provider}
			if model != "" {
				t["model"] = model
			}
			if weighted {
				w, err := strconv.ParseUint(weight, 10, 32)
				if err != nil {
					return fmt.Errorf("%q: the weight after '=' is not a whole number", item+"="+weight)
				}
				t["weight"] = w
			}
			list = append(list, t)
		}
		obj[name] = list
	case fd.IsList():
		var list []any
		for _, item := range strings.Split(value, ",") {
			v, err := scalar(fd, item)
			if err != nil {
				return err
			}
			list = append(list, v)
		}
		obj[name] = list
	case fd.Kind() == protoreflect.MessageKind:
		return fmt.Errorf("set its fields with %s.FIELD=VALUE", name)
	default:
		v, err := scalar(fd, value)
		if err != nil {
			return err
		}
		obj[name] = v
	}
	return nil
}

func scalar(fd protoreflect.FieldDescriptor, s string) (any, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.ParseBool(s)
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return v, nil
	case protoreflect.Uint32Kind, protoreflect.Int32Kind, protoreflect.Uint64Kind, protoreflect.Int64Kind:
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", s)
		}
		return v, nil
	}
	return s, nil
}

func readFile(stdin io.Reader, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %w", err)
	}
	return b, nil
}

// printEntities prints entities as a table, or as JSON with -json: an
// array for a list, whatever its length, and an object for a get.
func (c *cli) printEntities(k *fsm.Kind, ms []proto.Message, list bool) error {
	if c.json {
		var out []json.RawMessage
		for _, m := range ms {
			b, err := api.EncodeEntity(m)
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		if out == nil {
			out = []json.RawMessage{}
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if !list && len(out) == 1 {
			return enc.Encode(out[0])
		}
		return enc.Encode(out)
	}
	desc := k.New().ProtoReflect().Descriptor()
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	var head []string
	for i := 0; i < desc.Fields().Len(); i++ {
		head = append(head, strings.ToUpper(string(desc.Fields().Get(i).Name())))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, m := range ms {
		b, err := api.EncodeEntity(m)
		if err != nil {
			return err
		}
		var obj map[string]any
		if err := json.Unmarshal(b, &obj); err != nil {
			return err
		}
		var row []string
		for i := 0; i < desc.Fields().Len(); i++ {
			name := string(desc.Fields().Get(i).Name())
			cell := render(obj[name])
			if name == "hash" && len(cell) > 19 {
				cell = cell[:19] + "…"
			}
			if cell == "" {
				cell = "-"
			}
			row = append(row, cell)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// render prints a JSON value compactly for a table cell.
func render(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			if t, ok := e.(map[string]any); ok && t["provider"] != nil {
				s := render(t["provider"])
				if m := render(t["model"]); m != "" {
					s += ":" + m
				}
				if w := render(t["weight"]); w != "" && w != "0" {
					s += "=" + w
				}
				parts = append(parts, s)
				continue
			}
			parts = append(parts, render(e))
		}
		return strings.Join(parts, ",")
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			s := render(x[k])
			if s == "" || s == "0" || s == "no" {
				continue
			}
			parts = append(parts, k+"="+s)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}
