package safepath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "docs"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "docs", "a.txt"), []byte("x"), 0o644))
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644))
	must(t, os.Symlink(outside, filepath.Join(root, "escape")))
	must(t, os.Symlink(filepath.Join(root, "docs"), filepath.Join(root, "inner")))

	realRoot, _ := filepath.EvalSymlinks(root)
	cases := []struct {
		rel  string
		want string // "" means refused
	}{
		{"docs/a.txt", filepath.Join(realRoot, "docs", "a.txt")},
		{"docs/./a.txt", filepath.Join(realRoot, "docs", "a.txt")},
		{"new/file.txt", filepath.Join(realRoot, "new", "file.txt")},
		{"inner/a.txt", filepath.Join(realRoot, "docs", "a.txt")},
		{"../etc/passwd", ""},
		{"docs/../../etc/passwd", ""},
		{"docs\\..\\..\\x", ""},
		{"/etc/passwd", ""},
		{"\\etc\\passwd", ""},
		{"", ""},
		{"a\x00b", ""},
		{"escape/secret", ""},
		{"escape/new-file", ""},
	}
	for _, c := range cases {
		got, err := Resolve(root, c.rel)
		if c.want == "" {
			if !errors.Is(err, ErrOutsideRoot) {
				t.Errorf("Resolve(%q) = %q, %v; want ErrOutsideRoot", c.rel, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", c.rel, got, err, c.want)
		}
	}
}

func FuzzResolve(f *testing.F) {
	root := f.TempDir()
	for _, s := range []string{"a", "../a", "a/../../b", "/x", "a/./b", "..\\x"} {
		f.Add(s)
	}
	realRoot, _ := filepath.EvalSymlinks(root)
	f.Fuzz(func(t *testing.T, rel string) {
		got, err := Resolve(root, rel)
		if err == nil && !within(realRoot, got) {
			t.Fatalf("Resolve(%q) = %q escapes %q", rel, got, realRoot)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
