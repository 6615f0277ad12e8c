package mcp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sort"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tool pinning: the hash of each tool's name, description and input
// schema is recorded the first time a server offers the tool. A server
// that later changes a tool's definition (a "rug pull": the description an
// agent reads is part of its prompt) is flagged, and with quarantine on the
// tool cannot be called until an operator accepts the new definition.

// pinState is a server's pins, stored under mcp_pins/<server>.
type pinState struct {
	Pins map[string]string `json:"pins"` // tool -> hash at first sight (or last accept)
	// Changed maps a tool whose current definition differs from its pin
	// to the current hash.
	Changed map[string]string `json:"changed"`
}

func newPinState() pinState {
	return pinState{Pins: map[string]string{}, Changed: map[string]string{}}
}

// toolHash hashes what a model reads about a tool. JSON encoding sorts map
// keys, so the same schema always hashes the same.
func toolHash(t *sdk.Tool) string {
	h := sha256.New()
	h.Write([]byte(t.Name))
	h.Write([]byte{0})
	h.Write([]byte(t.Description))
	h.Write([]byte{0})
	schema, _ := json.Marshal(t.InputSchema)
	h.Write(schema)
	if readOnly(t) {
		// The hint lets a call run without approval, so a tool that
		// starts claiming it is a changed tool. Only then is it hashed:
		// the pins of every other tool stay what they were.
		h.Write([]byte("\x00readOnlyHint"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readOnly reports the tool's readOnlyHint annotation.
func readOnly(t *sdk.Tool) bool { return t.Annotations != nil && t.Annotations.ReadOnlyHint }

// observe compares a fresh tool list with the pins. It pins new tools,
// records changed ones, and reports whether the state must be saved and
// which tools newly changed.
func (p *pinState) observe(tools []*sdk.Tool) (dirty bool, newlyChanged []string) {
	for _, t := range tools {
		h := toolHash(t)
		pin, known := p.Pins[t.Name]
		switch {
		case !known:
			p.Pins[t.Name] = h
			dirty = true
		case pin == h:
			if _, was := p.Changed[t.Name]; was {
				// Changed back to the pinned definition.
				delete(p.Changed, t.Name)
				dirty = true
			}
		default:
			if p.Changed[t.Name] != h {
				p.Changed[t.Name] = h
				newlyChanged = append(newlyChanged, t.Name)
				dirty = true
			}
		}
	}
	sort.Strings(newlyChanged)
	return dirty, newlyChanged
}

// accept re-pins the named changed tools (all when names is empty) and
// returns the ones accepted.
func (p *pinState) accept(names []string) []string {
	var out []string
	for tool, h := range p.Changed {
		if len(names) == 0 || slices.Contains(names, tool) {
			p.Pins[tool] = h
			delete(p.Changed, tool)
			out = append(out, tool)
		}
	}
	sort.Strings(out)
	return out
}
