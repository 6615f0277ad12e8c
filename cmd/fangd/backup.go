package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
)

// backupCommand writes a backup file of a home: through the running
// daemon's GET /api/admin/backup when it runs (it holds the home lock),
// or from the store directly when it is stopped. The file is written
// beside --out, checked end to end (store.VerifyBackup), and only then
// renamed to --out: a file at --out is always a complete backup.
type backupCommand struct{ home, out, url, key string }

func (c *backupCommand) Run(ctx context.Context) error {
	if c.out == "" {
		return errors.New("backup: --out FILE is required")
	}
	if _, err := os.Stat(c.out); err == nil {
		return fmt.Errorf("backup: %s exists; choose a new file", c.out)
	}
	tmp := c.out + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp) // gone after the rename; left over only on failure
	werr := c.write(ctx, f)
	serr := f.Sync()
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	header, records, err := store.VerifyBackup(tmp)
	if err != nil {
		return fmt.Errorf("backup: the file written is not complete: %w", err)
	}
	h, err := audit.ParseBackupHeader(header)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, c.out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	printJSON(map[string]any{"file": c.out, "records": records, "created_at": h.CreatedAt, "audit_anchor": h.AuditAnchor})
	return nil
}

func (c *backupCommand) write(ctx context.Context, w io.Writer) error {
	if c.url != "" {
		return c.fromDaemon(ctx, w)
	}
	home, err := homePath(c.home)
	if err != nil {
		return err
	}
	lock, err := lockHome(home)
	if err != nil {
		// In use: the daemon runs; ask it, at the address its config names.
		cfg, cerr := loadConfig(filepath.Join(home, "config.toml"), false)
		if cerr != nil {
			return cerr
		}
		cfg.applyEnv()
		c.url = "http://" + dialAddr(cfg.APIListen)
		if c.key == "" {
			c.key = cfg.APIKey
		}
		return c.fromDaemon(ctx, w)
	}
	lock.release()
	h, err := openHomeOffline(home)
	if err != nil {
		return err
	}
	defer h.close()
	if _, m, err := audit.CheckAnchor(h.db.AuditLog(), h.anchor, h.db.Fresh()); err != nil {
		return err
	} else if m != nil {
		return fmt.Errorf("%v: a backup would anchor the broken chain as whole; run `fangd audit accept` first", m)
	}
	_, _, err = audit.Backup(h.db, w, version)
	return err
}

// dialAddr turns a listen address into one to dial: a wildcard host is
// this machine.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func (c *backupCommand) fromDaemon(ctx context.Context, w io.Writer) error {
	if c.key == "" {
		c.key = os.Getenv("FANGD_API_KEY")
	}
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(c.url, "/")+"/api/admin/backup", nil)
	if err != nil {
		return err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	// No overall timeout: a large store takes as long as it takes; the
	// daemon cuts a stalled stream, and the file is checked at the end.
	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: time.Minute}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("ask the daemon at %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return fmt.Errorf("the daemon at %s answered %d: %s", c.url, resp.StatusCode, e.Error)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
