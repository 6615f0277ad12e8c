package mcp

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/fangd/fangd/store"
)

// A server's secrets live in the vault under mcp/<server>/env/<NAME> and
// mcp/<server>/header/<lowercase name>. Only that server's connection ever
// reads them, to put them into its own environment, arguments or headers.

func envKey(server, name string) string { return "mcp/" + server + "/env/" + name }

func headerKey(server, name string) string {
	return "mcp/" + server + "/header/" + strings.ToLower(name)
}

func isTemplate(v string) bool { return placeholderRE.MatchString(v) }

// splitSecrets returns the spec to store (names only) and the secret
// values given inline (vault key -> value). A header whose value is a
// ${VAR} template holds no secret and is kept as is.
func splitSecrets(s Spec) (Spec, map[string]string) {
	secrets := map[string]string{}
	out := s
	out.Env = nil
	for _, e := range s.Env {
		name, val, ok := strings.Cut(e, "=")
		if ok {
			secrets[envKey(s.Name, name)] = val
		}
		out.Env = append(out.Env, name)
	}
	out.Headers = nil
	for _, h := range s.Headers {
		name, val, ok := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		val = strings.TrimSpace(val)
		switch {
		case ok && isTemplate(val):
			out.Headers = append(out.Headers, name+": "+val)
		case ok:
			secrets[headerKey(s.Name, name)] = val
			out.Headers = append(out.Headers, name)
		default:
			out.Headers = append(out.Headers, name)
		}
	}
	return out, secrets
}

// vaultKeys lists every vault entry a stored spec may own.
func vaultKeys(s Spec) []string {
	var keys []string
	for _, e := range s.Env {
		keys = append(keys, envKey(s.Name, envName(e)))
	}
	for _, h := range s.Headers {
		keys = append(keys, headerKey(s.Name, headerName(h)))
	}
	if s.Transport.Type == TransportHTTP || s.Transport.Type == TransportSSE {
		keys = append(keys, oauthKey(s.Name))
	}
	return keys
}

// resolved is what a connection needs, secrets included. It lives only in
// the connecting goroutine.
type resolved struct {
	env     []string // NAME=value, the server's declared variables that have a value
	args    []string
	headers http.Header
}

// resolve fills in a spec's values: each env NAME from its inline value,
// else the vault, else the daemon's own environment (LibreFang's
// pass-through); ${NAME} in args and headers from those; header values
// inline or from the vault. A missing value is a permanent error.
func resolve(s Spec, vault secretStore, environ func(string) (string, bool)) (resolved, error) {
	if environ == nil {
		environ = os.LookupEnv
	}
	var r resolved
	vals := map[string]string{}
	for _, e := range s.Env {
		name, val, inline := strings.Cut(e, "=")
		if !inline {
			v, found, err := vaultGet(vault, envKey(s.Name, name))
			if err != nil {
				return r, err
			}
			if !found {
				v, found = environ(name)
			}
			if !found {
				continue
			}
			val = v
		}
		vals[name] = val
		r.env = append(r.env, name+"="+val)
	}
	subst := func(text string) (string, error) {
		var missing string
		out := placeholderRE.ReplaceAllStringFunc(text, func(m string) string {
			name := m[2 : len(m)-1]
			v, ok := vals[name]
			if !ok && missing == "" {
				missing = name
			}
			return v
		})
		if missing != "" {
			return "", fmt.Errorf("${%s} has no value: set it in the vault (catalog install credentials), inline in env, or in fangd's environment", missing)
		}
		return out, nil
	}
	for _, a := range s.Transport.Args {
		v, err := subst(a)
		if err != nil {
			return r, err
		}
		r.args = append(r.args, v)
	}
	r.headers = http.Header{}
	for _, h := range s.Headers {
		name, val, inline := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		val = strings.TrimSpace(val)
		if !inline {
			v, found, err := vaultGet(vault, headerKey(s.Name, name))
			if err != nil {
				return r, err
			}
			if !found {
				return r, fmt.Errorf("header %s has no value in the vault", name)
			}
			val = v
		}
		v, err := subst(val)
		if err != nil {
			return r, err
		}
		r.headers.Set(name, v)
	}
	return r, nil
}

func vaultGet(v secretStore, key string) (string, bool, error) {
	if v == nil {
		return "", false, nil
	}
	var out string
	err := v.With(key, func(secret []byte) error {
		out = string(secret)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return out, true, nil
}
