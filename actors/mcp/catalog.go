package mcp

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/fangd/fangd/actors/kernel"
)

// shipped holds the catalog entries fangd ships. They are copied into the
// daemon's catalog directory on first start; from then on the directory is
// the catalog, so an operator can edit, add or remove entries and POST
// /api/mcp/reload.
//
//go:embed catalog/*.toml
var shipped embed.FS

// CatalogEntry is one installable server template (LibreFang's
// mcp/catalog/*.toml shape).
type CatalogEntry struct {
	ID                string        `json:"id" toml:"id"`
	Name              string        `json:"name" toml:"name"`
	Description       string        `json:"description" toml:"description"`
	Category          string        `json:"category" toml:"category"`
	Icon              string        `json:"icon,omitempty" toml:"icon"`
	Tags              []string      `json:"tags" toml:"tags"`
	Transport         Transport     `json:"transport" toml:"transport"`
	Headers           []string      `json:"headers,omitempty" toml:"headers"`
	RequiredEnv       []RequiredEnv `json:"required_env" toml:"required_env"`
	SetupInstructions string        `json:"setup_instructions,omitempty" toml:"setup_instructions"`
	TimeoutSecs       int           `json:"timeout_secs,omitempty" toml:"timeout_secs"`
	// Installed is filled per response: a configured server was installed
	// from this entry.
	Installed bool `json:"installed" toml:"-"`
	// HasOAuth is false for every shipped entry: MCP-side OAuth is not
	// implemented (docs/mcp.md).
	HasOAuth bool `json:"has_oauth" toml:"-"`
}

// RequiredEnv is a credential or setting an entry needs at install time.
type RequiredEnv struct {
	Name     string `json:"name" toml:"name"`
	Label    string `json:"label" toml:"label"`
	Help     string `json:"help" toml:"help"`
	IsSecret bool   `json:"is_secret" toml:"is_secret"`
	GetURL   string `json:"get_url,omitempty" toml:"get_url"`
}

// Catalog is an immutable snapshot of the catalog directory.
type Catalog struct {
	entries map[string]CatalogEntry
	ids     []string
}

// Get returns the entry id.
func (c *Catalog) Get(id string) (CatalogEntry, bool) {
	e, ok := c.entries[id]
	return e, ok
}

// All returns every entry in id order.
func (c *Catalog) All() []CatalogEntry {
	out := make([]CatalogEntry, 0, len(c.ids))
	for _, id := range c.ids {
		out = append(out, c.entries[id])
	}
	return out
}

// Len is the number of entries.
func (c *Catalog) Len() int { return len(c.ids) }

// SeedCatalog copies the shipped entries into dir when dir does not exist
// yet (first start). An existing directory is the operator's and is left
// alone, even when empty.
func SeedCatalog(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tmp := dir + ".seeding"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	files, err := fs.ReadDir(shipped, "catalog")
	if err != nil {
		return err
	}
	for _, f := range files {
		raw, err := shipped.ReadFile("catalog/" + f.Name())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, f.Name()), raw, 0o600); err != nil {
			return err
		}
	}
	// Rename last, so a crash mid-copy leaves no half-seeded catalog that
	// would never be completed.
	return os.Rename(tmp, dir)
}

// LoadCatalog reads every *.toml file in dir. Any bad file fails the whole
// load with an error naming it, so a reload never applies half a catalog.
func LoadCatalog(dir string) (*Catalog, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.toml"))
	if err != nil {
		return nil, err
	}
	c := &Catalog{entries: map[string]CatalogEntry{}}
	for _, path := range names {
		e, err := parseCatalogFile(path)
		if err != nil {
			return nil, kernel.Invalid("catalog file %s: %v", filepath.Base(path), err)
		}
		if _, dup := c.entries[e.ID]; dup {
			return nil, kernel.Invalid("catalog file %s: id %q is used by another file", filepath.Base(path), e.ID)
		}
		c.entries[e.ID] = e
		c.ids = append(c.ids, e.ID)
	}
	sort.Strings(c.ids)
	return c, nil
}

func parseCatalogFile(path string) (CatalogEntry, error) {
	var e CatalogEntry
	md, err := toml.DecodeFile(path, &e)
	if err != nil {
		return e, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return e, fmt.Errorf("unknown key(s): %s", strings.Join(keys, ", "))
	}
	if e.Tags == nil {
		e.Tags = []string{}
	}
	if e.RequiredEnv == nil {
		e.RequiredEnv = []RequiredEnv{}
	}
	return e, e.validate()
}

var placeholderRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func (e *CatalogEntry) validate() error {
	if !ValidName(e.ID) {
		return fmt.Errorf("id %q: use letters, digits, '-' or '_'", e.ID)
	}
	if e.Name == "" {
		return errors.New("name is required")
	}
	for _, r := range e.RequiredEnv {
		if !envNameRE.MatchString(r.Name) {
			return fmt.Errorf("required_env name %q is not an environment variable name", r.Name)
		}
	}
	// The spec check also refuses a ${NAME} that required_env does not
	// list.
	spec := e.spec(e.ID)
	return spec.Validate()
}

// spec is the server spec an install of e creates under name. Every
// required variable is declared in env; its value lives in the vault.
func (e *CatalogEntry) spec(name string) Spec {
	s := Spec{Name: name, TemplateID: e.ID, TimeoutSecs: e.TimeoutSecs,
		Transport: Transport{Type: e.Transport.Type, Command: e.Transport.Command,
			Args: slices.Clone(e.Transport.Args), URL: e.Transport.URL},
		Headers: slices.Clone(e.Headers)}
	for _, r := range e.RequiredEnv {
		s.Env = append(s.Env, r.Name)
	}
	return s
}
