package app

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/adminclient"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

// Queue is the outbox as `alertd outbox` sees it: opened directly when the
// service is stopped, reached through its HTTP API when it runs.
type Queue interface {
	httpapi.Queue
	Close() error
}

// OpenQueue reaches cfg's outbox. via says how ("store FILE" or "running
// alertd at ADDR").
func OpenQueue(cfg *config.Config) (q Queue, via string, err error) {
	if clustered(cfg) {
		// Each partition's outbox is in its state, written only by the
		// instance that owns it: that instance lists the ones it owns.
		if cfg.HTTP.Listen == "" || cfg.HTTP.Listen == "off" {
			return nil, "", errors.New("with store.backend: nats the outbox is each partition's, reached through the instance that owns it: enable http.listen")
		}
		base, err := adminclient.APIBase(cfg)
		if err != nil {
			return nil, "", err
		}
		if c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 2*time.Second); err != nil {
			return nil, "", fmt.Errorf("no alertd answers at %s (http.listen of %s): with store.backend: nats the outbox is each partition's, "+
				"reached through the running instance that owns it", base, cfg.File)
		} else {
			_ = c.Close()
		}
		return adminclient.Queue{Client: adminclient.New(base)}, "the partitions owned by the alertd at " + base, nil
	}
	db, base, err := reach(cfg)
	switch {
	case err != nil:
		return nil, "", err
	case db != nil:
		return &directQueue{Outbox: outbox.New(db), db: db}, "store " + cfg.Store.Path, nil
	}
	return adminclient.Queue{Client: adminclient.New(base)}, "running alertd at " + base, nil
}

// Silences is the silences as `alertd silence` sees them, like Queue.
type Silences interface {
	httpapi.Silences
	Close() error
}

// OpenSilences reaches cfg's silences, like OpenQueue.
func OpenSilences(cfg *config.Config) (s Silences, via string, err error) {
	if clustered(cfg) {
		return openClusterSilences(cfg)
	}
	db, base, err := reach(cfg)
	switch {
	case err != nil:
		return nil, "", err
	case db != nil:
		st, err := silence.Open(db, time.Now(), nil) // the listing shows what matters
		if err != nil {
			_ = db.Close()
			return nil, "", err
		}
		return &directSilences{silenceAdmin{st, func() []string { return ruleNames(cfg) }, nil}, db}, "store " + cfg.Store.Path, nil
	}
	return &adminclient.Silences{Client: adminclient.New(base)}, "running alertd at " + base, nil
}

func ruleNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Rules))
	for _, r := range cfg.Rules {
		names = append(names, r.Name)
	}
	return names
}

// reach opens the store directly when no alertd holds it, else returns
// the base URL of the running alertd's HTTP API.
func reach(cfg *config.Config) (*store.DB, string, error) {
	if _, err := os.Stat(cfg.Store.Path); errors.Is(err, fs.ErrNotExist) {
		// alertd never ran here: a fresh store, as the service would make.
		db, _, err := store.Open(cfg.Store.Path)
		return db, "", err
	}
	db, err := store.OpenExisting(cfg.Store.Path, 200*time.Millisecond)
	var damage *store.Damage
	switch {
	case err == nil:
		return db, "", nil
	case errors.As(err, &damage):
		// Left to the service, which logs the recovery where the operator
		// looks for it, rather than done behind a command that only reads.
		return nil, "", fmt.Errorf("%w; alertd run moves it aside and starts a fresh store with what can be read of it (alertd store salvage does the same now)", err)
	case !errors.Is(err, store.ErrLocked):
		return nil, "", err
	}
	if cfg.HTTP.Listen == "" || cfg.HTTP.Listen == "off" {
		return nil, "", fmt.Errorf("alertd is running on %s and its http.listen is off: stop it, or enable http to manage it while it runs", cfg.Store.Path)
	}
	base, err := adminclient.APIBase(cfg)
	return nil, base, err
}

// silenceBackend is where silences are kept: the store
// (*silence.Store) or the cluster's bucket (*cluster.Silences).
type silenceBackend interface {
	List(now time.Time) []silence.Silence
	Silenced(rule, series string, now time.Time) time.Time
	Add(si silence.Silence) (silence.Silence, error)
	Remove(id uint64) error
}

// silenceAdmin validates silences against the configured rules.
type silenceAdmin struct {
	silenceBackend
	rules func() []string // the rules in force, for Validate
	// removed, when alertd runs, releases what the silence held back.
	removed func(rule string)
}

func (s silenceAdmin) Remove(id uint64) error {
	var rule string
	for _, si := range s.silenceBackend.List(time.Now()) {
		if si.ID == id {
			rule = si.Rule
		}
	}
	if err := s.silenceBackend.Remove(id); err != nil {
		return err
	}
	if s.removed != nil && rule != "" {
		s.removed(rule)
	}
	return nil
}

func (s silenceAdmin) Add(si silence.Silence) (silence.Silence, error) {
	now := time.Now()
	si.Created = now
	if err := si.Validate(s.rules(), now); err != nil {
		return silence.Silence{}, err
	}
	return s.silenceBackend.Add(si)
}

type directSilences struct {
	silenceAdmin
	db *store.DB
}

func (d *directSilences) Close() error { return d.db.Close() }

type directQueue struct {
	*outbox.Outbox
	db *store.DB
}

func (d *directQueue) Close() error { return d.db.Close() }
