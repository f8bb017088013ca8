package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// replace puts a fresh store at path in place of the damaged file there,
// with what could be salvaged from it. The fresh store is built beside it
// first and then renamed over path, so a crash meanwhile leaves the
// damaged file where it was, to be dealt with at the next start. The
// damaged file is never written: it keeps its bytes under its new name.
// A nil Recovery means the file at path was sound by the time the lock
// was had (another alertd replaced it first).
func replace(path string) (*Recovery, error) {
	f, _, err := lockFile(path, false, LockTimeout)
	if err != nil {
		return nil, err
	}
	// Held until the fresh store is in place: an alertd that opened the
	// damaged file meanwhile then finds it is no longer at path.
	defer f.Close()
	var damage *Damage
	if err := check(f); !errors.As(err, &damage) {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("salvage: %w", err)
	}
	tmp := path + ".salvage"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("salvage: %w", err)
	}
	fresh, err := open(tmp, LockTimeout, true)
	if err != nil {
		return nil, fmt.Errorf("salvage: create a fresh store: %w", err)
	}
	sv, err := salvage(f, fi.Size(), fresh)
	if cerr := fresh.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("salvage: %w", cerr)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, err
	}
	movedTo, err := moveAside(path, tmp)
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("store file %s is damaged (%s); moving it aside failed: %w", path, damage.Finding, err)
	}
	return &Recovery{MovedTo: movedTo, Finding: damage.Finding, Salvaged: sv}, nil
}

// moveAside names the damaged file at path path.corrupt-<UTC time> and
// puts the fresh store tmp at path. A hard link keeps path a store at
// every instant; where links are not supported, two renames do.
func moveAside(path, tmp string) (string, error) {
	base := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	movedTo := base
	for i := 2; ; i++ {
		err := os.Link(path, movedTo)
		if err == nil {
			break
		}
		if errors.Is(err, fs.ErrExist) {
			movedTo = fmt.Sprintf("%s-%d", base, i)
			continue
		}
		if _, serr := os.Lstat(movedTo); serr == nil {
			return "", err
		}
		if err := os.Rename(path, movedTo); err != nil {
			return "", err
		}
		break
	}
	if err := os.Rename(tmp, path); err != nil {
		return movedTo, err
	}
	syncDir(filepath.Dir(path))
	return movedTo, nil
}

// syncDir makes the renames durable; a failure only risks the old names
// coming back after a power cut, which the next start handles again.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
