package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// objectFlags are the flags of the direct S3 commands.
type objectFlags struct {
	profile string
	json    bool
}

// openBucket parses an s3:// argument and opens its bucket with the profile.
// The caller closes the returned client.
func (a *app) openBucket(ctx context.Context, arg, profile string) (*storage.S3, tasks.Location, func(), error) {
	loc, err := tasks.ParseLocation(arg, profile)
	if err != nil {
		return nil, loc, nil, &usageError{err}
	}
	if loc.Kind() != tasks.KindS3 {
		return nil, loc, nil, usageErrorf("%q is not an s3://bucket/key location", arg)
	}
	c, err := a.config()
	if err != nil {
		return nil, loc, nil, err
	}
	sc, err := c.profile(loc.Profile)
	if err != nil {
		return nil, loc, nil, err
	}
	client, err := storage.NewClient(ctx, sc)
	if err != nil {
		return nil, loc, nil, fmt.Errorf("profile %q: %w", loc.Profile, err)
	}
	s, err := client.Bucket(loc.Bucket)
	if err != nil {
		_ = client.Close()
		return nil, loc, nil, &usageError{err}
	}
	return s, loc, func() { _ = client.Close() }, nil
}

// openObject is openBucket for an argument that must name an object: a
// bucket alone (s3://bucket) is refused.
func (a *app) openObject(ctx context.Context, arg, profile string) (*storage.S3, tasks.Location, func(), error) {
	s, loc, closeFn, err := a.openBucket(ctx, arg, profile)
	if err == nil && loc.Key == "" {
		closeFn()
		return nil, loc, nil, usageErrorf("%s names a bucket, not an object: give s3://%s/key", arg, loc.Bucket)
	}
	return s, loc, closeFn, err
}

func objectCommands(a *app) []*cobra.Command {
	return []*cobra.Command{lsCmd(a), infoCmd(a), urlCmd(a)}
}

func lsCmd(a *app) *cobra.Command {
	f := &objectFlags{}
	var limit int
	cmd := &cobra.Command{
		Use:   "ls s3://bucket[/prefix]",
		Short: "List objects under a prefix",
		Long: `List the objects under a prefix, in key order, with every page fetched (the
listing is recursive). Each line holds the last-modified time, the size in
bytes and the key. With --json, one JSON object per line (key, size, etag,
last_modified).

A prefix is a directory, as everywhere in ferry: s3://backups/2026 lists
backups/2026/..., not 2026-old/ or 2026.tar. End it with '*' (quoted for the
shell) to list by raw prefix: 's3://backups/2026*' lists all three.`,
		Example: `  ferry ls s3://backups/2026
  ferry ls 's3://backups/2026*'
  ferry ls s3://backups --limit 10 --profile r2
  ferry ls s3://backups/ --json | jq -r .key`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if limit < 0 {
				return usageErrorf("--limit %d is negative: use 0 for all, or a positive number", limit)
			}
			ctx := cmd.Context()
			s, loc, closeFn, err := a.openBucket(ctx, argv[0], f.profile)
			if err != nil {
				return err
			}
			defer closeFn()
			for obj, err := range s.List(ctx, tasks.DirPrefix(loc.Key), limit) {
				if err != nil {
					return err
				}
				if f.json {
					if err := writeJSON(a.stdout, obj); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(a.stdout, "%s %12d %s\n", obj.LastModified.Local().Format(time.DateTime), obj.Size, obj.Key)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&f.profile, "profile", "", "S3 profile (default \"default\")")
	cmd.Flags().IntVar(&limit, "limit", 0, "list at most N objects (0: all)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print one JSON object per line")
	return cmd
}

// infoOutput is `ferry info --json`.
type infoOutput struct {
	Bucket string `json:"bucket"`
	storage.StoredFile
}

// infoFields are the lines of `ferry info` after the ETag and time: every
// header S3 stores with the object (what a browser, a CDN or a copy gets),
// then ferry's checksum and the encryption. All of it is the server's answer
// to a HEAD of the object, nothing of the profile: no credential can appear.
func infoFields(obj storage.StoredFile) []struct{ name, value string } {
	h := obj.Headers
	return []struct{ name, value string }{
		{"Content-Type", h.ContentType}, {"Content-Encoding", h.ContentEncoding},
		{"Content-Disposition", h.ContentDisposition}, {"Cache-Control", h.CacheControl},
		{"Content-Language", h.ContentLanguage}, {"Expires", h.Expires},
		{"Encryption", obj.Encryption}, {"Checksum", obj.Checksum},
	}
}

func infoCmd(a *app) *cobra.Command {
	f := &objectFlags{}
	cmd := &cobra.Command{
		Use:   "info s3://bucket/key",
		Short: "Show an object's size, ETag, time, headers and metadata (HEAD)",
		Long: `Show what a HEAD of the object answers: size, ETag, last-modified time, the
headers S3 stores with it (Content-Type, Content-Encoding, Content-Disposition,
Cache-Control, Content-Language, Expires; empty ones are left out), its
encryption, ferry's CRC32C checksum when known, and every user metadata entry,
ferry's own (ferry-task-id, ferry-source-etag, ...) included. With --json, one
object: bucket, key, size, etag, last_modified, content_type,
content_encoding, content_disposition, cache_control, content_language,
expires, encryption, checksum, metadata (empty fields left out).`,
		Example: `  ferry info s3://backups/2026/backup.tar
  ferry info s3://backups/2026/backup.tar --json | jq .size`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			ctx := cmd.Context()
			s, loc, closeFn, err := a.openObject(ctx, argv[0], f.profile)
			if err != nil {
				return err
			}
			defer closeFn()
			obj, err := s.Info(ctx, loc.Key)
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(a.stdout, infoOutput{Bucket: loc.Bucket, StoredFile: obj})
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "Bucket:\t%s\n", loc.Bucket)
			fmt.Fprintf(w, "Key:\t%s\n", obj.Key)
			fmt.Fprintf(w, "Size:\t%d (%s)\n", obj.Size, formatBytes(obj.Size))
			fmt.Fprintf(w, "ETag:\t%s\n", obj.ETag)
			fmt.Fprintf(w, "Last-Modified:\t%s\n", obj.LastModified.Local().Format(time.RFC3339))
			for _, f := range infoFields(obj) {
				if f.value != "" {
					fmt.Fprintf(w, "%s:\t%s\n", f.name, f.value)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(obj.Metadata)) {
				fmt.Fprintf(w, "Metadata:\t%s=%s\n", k, obj.Metadata[k])
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&f.profile, "profile", "", "S3 profile (default \"default\")")
	cmd.Flags().BoolVar(&f.json, "json", false, "print the object's metadata as JSON")
	return cmd
}

func urlCmd(a *app) *cobra.Command {
	f := &objectFlags{}
	var (
		expires     time.Duration
		method      string
		contentType string
	)
	cmd := &cobra.Command{
		Use:   "url s3://bucket/key",
		Short: "Print a presigned URL to download (GET) or upload (PUT) an object",
		Long: `Print a presigned URL for the object: GET to download it without credentials,
PUT to let a client upload it directly. The URL lasts --expires (default: the
profile's presigned_expiry, else 1h; at most 168h).`,
		Example: `  curl -o backup.tar "$(ferry url s3://backups/backup.tar --expires 15m)"
  ferry url s3://uploads/incoming.bin --method PUT --content-type application/octet-stream`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			m := strings.ToUpper(method)
			if m != "GET" && m != "PUT" {
				return usageErrorf("invalid --method %q: use GET or PUT", method)
			}
			if contentType != "" && m != "PUT" {
				return usageErrorf("--content-type applies to PUT URLs only")
			}
			ctx := cmd.Context()
			s, loc, closeFn, err := a.openObject(ctx, argv[0], f.profile)
			if err != nil {
				return err
			}
			defer closeFn()
			u, err := s.URL(ctx, loc.Key, &storage.URLOptions{Expires: expires, Method: m, ContentType: contentType})
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(a.stdout, map[string]string{"url": u, "method": m})
			}
			fmt.Fprintln(a.stdout, u)
			return nil
		},
	}
	cmd.Flags().StringVar(&f.profile, "profile", "", "S3 profile (default \"default\")")
	cmd.Flags().Var((*duration)(&expires), "expires", "lifetime of the URL, e.g. 15m, 1h (at most 168h)")
	cmd.Flags().StringVar(&method, "method", "GET", "GET (download) or PUT (upload)")
	cmd.Flags().StringVar(&contentType, "content-type", "", "bind a PUT URL to this Content-Type")
	cmd.Flags().BoolVar(&f.json, "json", false, `print {"url","method"} as JSON`)
	return cmd
}
