package channel

import (
	"context"
	"strings"
	"testing"
)

type plainAdapter struct{}

func (*plainAdapter) Run(context.Context, Host) error                { return nil }
func (*plainAdapter) Send(context.Context, Outbound) (string, error) { return "", nil }
func (*plainAdapter) Probe(context.Context) (Identity, error)        { return Identity{}, nil }
func (*plainAdapter) Capabilities() Capabilities                     { return Capabilities{} }

type hookAdapter struct{ plainAdapter }

func (*hookAdapter) Webhook(context.Context, *WebhookRequest) (*WebhookResponse, []Inbound, error) {
	return nil, nil, nil
}

// misspelt has a Webhook method whose signature drifted: it is not a
// WebhookReceiver, so it must not be listed as taking webhooks.
type misspelt struct{ plainAdapter }

func (*misspelt) Webhook(context.Context, *WebhookRequest) (*WebhookResponse, error) { return nil, nil }

func build(*Config) (Adapter, error) { return &plainAdapter{}, nil }

// Whether an adapter takes webhooks follows from its type, never from a
// hand-written flag.
func TestRegisterDerivesWebhookFromTheAdapterType(t *testing.T) {
	r := newRegistry(nil)
	register[*plainAdapter](r, Spec{Name: "plain"}, build)
	register[*hookAdapter](r, Spec{Name: "hook"}, build)
	register[*misspelt](r, Spec{Name: "misspelt"}, build)
	for name, want := range map[string]bool{"plain": false, "hook": true, "misspelt": false} {
		if got := r.specs[name].Webhook; got != want {
			t.Errorf("%s: Webhook = %v, want %v", name, got, want)
		}
		if r.builders[name] == nil {
			t.Errorf("%s: no Builder registered", name)
		}
	}
}

func mustPanic(t *testing.T, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, want) {
			t.Fatalf("panic %v, want one saying %q", r, want)
		}
	}()
	fn()
}

// A hand-set Webhook, a name registered twice and a built adapter whose
// catalog row was left behind all fail at start.
func TestRegisterRefusesProgrammingErrors(t *testing.T) {
	r := newRegistry([]Spec{{Name: "line"}})
	mustPanic(t, "derived", func() { register[*hookAdapter](r, Spec{Name: "x", Webhook: true}, build) })
	mustPanic(t, "twice", func() { register[*plainAdapter](r, Spec{Name: "line"}, build) })
	register[*plainAdapter](r, Spec{Name: "y"}, build)
	mustPanic(t, "twice", func() { register[*plainAdapter](r, Spec{Name: "y"}, build) })
	mustPanic(t, "Builder", func() { register[*plainAdapter](r, Spec{Name: "z"}, nil) })
}

// Registration completes a Spec (form setup, the common fields) without
// touching the adapter's own Spec value.
func TestRegisterCompletesASpecWithoutChangingTheAdapters(t *testing.T) {
	own := Spec{Name: "own", Fields: make([]Field, 1, 8)}
	own.Fields[0] = TextField("a", "A", true)
	r := newRegistry(nil)
	register[*plainAdapter](r, own, build)
	got := r.specs["own"]
	if got.SetupType != "form" || len(got.Fields) != 1+len(commonFields()) || got.Fields[1].Key != FieldAgent {
		t.Fatalf("registered spec = %+v", got)
	}
	if own.SetupType != "" || len(own.Fields) != 1 || own.Fields[:2][1].Key != "" {
		t.Fatalf("the adapter's own Spec changed: %+v", own)
	}
}

// The listing is LibreFang's catalog order, whoever declares each row,
// then adapters LibreFang does not list, by name.
func TestSpecsFollowTheCatalogOrderThenExtrasByName(t *testing.T) {
	r := newRegistry([]Spec{{Name: catalog[3]}, {Name: catalog[1]}})
	register[*plainAdapter](r, Spec{Name: "zz-extra"}, build)
	register[*plainAdapter](r, Spec{Name: catalog[0]}, build)
	register[*plainAdapter](r, Spec{Name: "aa-extra"}, build)
	var names []string
	for _, s := range r.list() {
		names = append(names, s.Name)
	}
	want := []string{catalog[0], catalog[1], catalog[3], "aa-extra", "zz-extra"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("order %v, want %v", names, want)
	}
}

// The catalog names each of LibreFang's 44 adapters once, and every row
// of an adapter not built is in it.
func TestCatalogIsLibreFangs44(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range catalog {
		if seen[n] {
			t.Fatalf("%s listed twice", n)
		}
		seen[n] = true
	}
	if len(catalog) != 44 {
		t.Fatalf("catalog has %d names", len(catalog))
	}
	for _, s := range notBuilt {
		if !seen[s.Name] {
			t.Errorf("row %s is not in the catalog", s.Name)
		}
	}
}
