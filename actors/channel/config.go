package channel

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// Config is one channel's validated configuration as its adapter sees it.
// Accessors fall back to the field's schema default.
type Config struct {
	Name    string // the channel's name ("telegram", or an extra instance's)
	Adapter string // the registry adapter it runs
	Spec    *Spec
	Values  map[string]string   // text, number and bool fields
	Lists   map[string][]string // list fields
	Secrets map[string]string   // secret fields; in memory only, never logged
	Log     zerolog.Logger
	// Net is the network policy to dial through (nil in adapter unit
	// tests); use HTTPClient and DialContext rather than reading it.
	Net Network
}

// Text returns a text/number/bool field's value, or its default.
func (c *Config) Text(key string) string {
	if v, ok := c.Values[key]; ok && v != "" {
		return v
	}
	if f, ok := c.Spec.Field(key); ok {
		return f.Default
	}
	return ""
}

// Int returns a number field (0 when unset with no default).
func (c *Config) Int(key string) int {
	n, _ := strconv.Atoi(c.Text(key))
	return n
}

// Bool returns a bool field.
func (c *Config) Bool(key string) bool { return c.Text(key) == "true" }

// List returns a list field.
func (c *Config) List(key string) []string { return c.Lists[key] }

// Secret returns a secret field's value ("" when unset).
func (c *Config) Secret(key string) string { return c.Secrets[key] }

// AgentName is the agent bound to the channel ("" for none).
func (c *Config) AgentName() string { return c.Values[FieldAgent] }

// Enabled reports whether the channel should run.
func (c *Config) Enabled() bool { return c.Text(FieldEnabled) != "false" }

// namePattern is what a channel name may look like: it appears in URLs,
// actor ids, store keys and comms targets ("channel:<name>:<chat>").
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidName reports whether name can name a channel.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// fieldAliases are keys accepted for a field under another name:
// LibreFang's "default_agent", and its "<secret>_env" keys in the
// {"fields": {...}} form (which carry the value there).
func canonicalKey(spec *Spec, key string) string {
	if key == "default_agent" {
		return FieldAgent
	}
	if base, ok := strings.CutSuffix(key, "_env"); ok {
		if f, ok := spec.Field(base); ok && f.Type == TypeSecret {
			return base
		}
	}
	return key
}

// maxValueLen caps one field's value (a service-account JSON is the
// largest legitimate one).
const maxValueLen = 64 << 10

// parsedFields is the result of validating submitted field values against
// a Spec. A key present with an empty value clears the field.
type parsedFields struct {
	values  map[string]string
	lists   map[string][]string
	secrets map[string]string
	cleared map[string]bool
}

// parseFields validates raw values (from JSON with UseNumber, or from TOML)
// against spec's schema. Unknown keys and wrong types are FieldErrors.
func parseFields(spec *Spec, raw map[string]any) (*parsedFields, error) {
	p := &parsedFields{values: map[string]string{}, lists: map[string][]string{},
		secrets: map[string]string{}, cleared: map[string]bool{}}
	keys := slices.Sorted(maps.Keys(raw)) // report the first bad field deterministically
	for _, k := range keys {
		key := canonicalKey(spec, k)
		f, ok := spec.Field(key)
		if !ok {
			return nil, &FieldError{Field: k, Msg: fmt.Sprintf("unknown field for adapter %s (known: %s)", spec.Name, fieldKeys(spec))}
		}
		v := raw[k]
		if v == nil {
			p.cleared[key] = true
			continue
		}
		switch f.Type {
		case TypeSecret, TypeText:
			s, ok := v.(string)
			if !ok {
				return nil, &FieldError{Field: k, Msg: "must be a string"}
			}
			if len(s) > maxValueLen {
				return nil, &FieldError{Field: k, Msg: "is too long"}
			}
			if strings.ContainsAny(s, "\x00") || (f.Type == TypeSecret && strings.ContainsAny(s, "\r\n")) {
				return nil, &FieldError{Field: k, Msg: "must not contain NUL or line breaks"}
			}
			s = strings.TrimSpace(s)
			if s == "" {
				p.cleared[key] = true
			} else if f.Type == TypeSecret {
				p.secrets[key] = s
			} else {
				p.values[key] = s
			}
		case TypeNumber:
			n, err := toInt(v)
			if err != nil {
				return nil, &FieldError{Field: k, Msg: err.Error()}
			}
			if n == nil {
				p.cleared[key] = true
			} else {
				p.values[key] = strconv.FormatInt(*n, 10)
			}
		case TypeBool:
			b, err := toBool(v)
			if err != nil {
				return nil, &FieldError{Field: k, Msg: err.Error()}
			}
			p.values[key] = strconv.FormatBool(b)
		case TypeList:
			l, err := toList(v)
			if err != nil {
				return nil, &FieldError{Field: k, Msg: err.Error()}
			}
			if len(l) == 0 {
				p.cleared[key] = true
			} else {
				p.lists[key] = l
			}
		}
	}
	return p, nil
}

func fieldKeys(spec *Spec) string {
	keys := make([]string, len(spec.Fields))
	for i, f := range spec.Fields {
		keys[i] = f.Key
	}
	return strings.Join(keys, ", ")
}

func toInt(v any) (*int64, error) {
	var n int64
	switch x := v.(type) {
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return nil, fmt.Errorf("must be an integer, got %s", x)
		}
		n = i
	case int64:
		n = x
	case int:
		n = int64(x)
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("must be an integer")
		}
		n = int64(x)
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return nil, nil
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("must be an integer, got %q", x)
		}
		n = i
	default:
		return nil, fmt.Errorf("must be a number")
	}
	if n < 0 || n > math.MaxInt32 {
		return nil, fmt.Errorf("must be between 0 and %d", math.MaxInt32)
	}
	return &n, nil
}

func toBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "yes", "1", "on":
			return true, nil
		case "false", "no", "0", "off":
			return false, nil
		}
	}
	return false, fmt.Errorf("must be true or false")
}

// toList accepts a JSON/TOML array of strings (or numbers, for ids) or one
// comma-separated string, as LibreFang's dashboard sends.
func toList(v any) ([]string, error) {
	var items []string
	switch x := v.(type) {
	case string:
		items = strings.Split(x, ",")
	case []any:
		for _, e := range x {
			switch s := e.(type) {
			case string:
				items = append(items, s)
			case json.Number:
				items = append(items, s.String())
			case int64:
				items = append(items, strconv.FormatInt(s, 10))
			default:
				return nil, fmt.Errorf("must be a list of strings")
			}
		}
	case []string:
		items = x
	default:
		return nil, fmt.Errorf("must be a list of strings or a comma-separated string")
	}
	out := make([]string, 0, len(items))
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			if len(s) > 1024 {
				return nil, fmt.Errorf("has an item that is too long")
			}
			out = append(out, s)
		}
	}
	if len(out) > 1000 {
		return nil, fmt.Errorf("has more than 1000 items")
	}
	return out, nil
}

// checkRequired reports the first required field that has no value.
func checkRequired(c *Config) error {
	for _, f := range c.Spec.Fields {
		if !f.Required {
			continue
		}
		has := false
		switch f.Type {
		case TypeSecret:
			has = c.Secrets[f.Key] != ""
		case TypeList:
			has = len(c.Lists[f.Key]) > 0
		default:
			has = c.Values[f.Key] != ""
		}
		if !has {
			return &FieldError{Field: f.Key, Msg: "is required"}
		}
	}
	return nil
}

func osGetenv(k string) string { return os.Getenv(k) }
