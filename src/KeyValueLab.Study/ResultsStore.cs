using System.Text.Json;
using Microsoft.Data.Sqlite;

namespace KeyValueLab.Study;

/// <summary>A finished unit as stored: what ran (config JSON), what came out (result JSON), and where/when/how long.</summary>
public sealed record UnitRecord(
    string UnitId, string Kind, string GroupId, int Seed, string Config, string Result,
    double Seconds, string StartedUtc, string FinishedUtc, string Host, string Versions, string Shard);

/// <summary>
/// The study's results store: <c>results.db</c> (SQLite) in the run folder. Table <c>study</c> holds the resolved
/// study (canonical JSON and hash), the model's fingerprint and when the run began; table <c>units</c> one row per
/// finished unit, written in its own transaction the moment the unit finishes (synchronous=FULL), so a killed run
/// loses at most the unit in progress, which the next run redoes. A unit id is the primary key: a unit is never
/// stored twice. Reopening with a different study is refused.
/// </summary>
public sealed class ResultsStore : IDisposable
{
    public const string FileName = "results.db";
    private const int SchemaVersion = 1;
    private readonly SqliteConnection _db;

    private ResultsStore(SqliteConnection db, string path) => (_db, Path) = (db, path);

    public string Path { get; }

    /// <summary>What a run folder holds besides its store once units have finished: if these exist, the store must too.</summary>
    public static readonly string[] ResultFolders = ["report", "adapters", "tune"];

    private const string StartOver = "start over with `kvlab study --fresh` (moves the earlier results aside) or restore results.db from a copy";

    /// <summary>
    /// Opens (creating when <paramref name="create"/>) the store of a run folder. The store must know what it is: it passes
    /// <c>PRAGMA integrity_check</c> and holds both tables; a store that is missing, empty or holds no units next to earlier
    /// results (<see cref="ResultFolders"/>) is refused with a line saying how to start over, never silently restarted.
    /// </summary>
    public static ResultsStore Open(string runFolder, bool create)
    {
        string path = System.IO.Path.Combine(runFolder, FileName);
        bool exists = File.Exists(path);
        if (!create && !exists) throw new InputException(runFolder, $"no {FileName} here: not a study run folder");
        var earlier = ResultFolders.Where(f => Directory.Exists(System.IO.Path.Combine(runFolder, f))).ToList();
        string holds = $"{runFolder} holds earlier results ({string.Join(", ", earlier.Select(f => f + "/"))})";
        if (create && earlier.Count > 0 && (!exists || new FileInfo(path).Length == 0))
            throw new InputException(path, $"{(exists ? "is empty" : "is missing")} but {holds}; {StartOver}");
        if (create) Directory.CreateDirectory(runFolder);
        var db = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = create ? SqliteOpenMode.ReadWriteCreate : SqliteOpenMode.ReadWrite,
            Pooling = false,
        }.ToString());
        try
        {
            db.Open();
            var store = new ResultsStore(db, path);
            if (exists && store.Scalar("PRAGMA integrity_check") is var check && check != "ok")
                throw new InputException(path, $"is damaged (integrity_check: {check}); {StartOver}");
            store.Execute("PRAGMA synchronous=FULL;");
            var tables = store.Tables();
            bool hasStudy = tables.Contains("study"), hasUnits = tables.Contains("units");
            if (hasStudy != hasUnits)
                throw new InputException(path, $"lacks its {(hasStudy ? "units" : "study")} table; {StartOver}");
            if (!create || (!hasStudy && earlier.Count > 0))
            {
                if (!hasStudy)
                    throw new InputException(path, create ? $"holds no tables but {holds}; {StartOver}" : "not a KeyValueLab results store (no study or units table)");
                string? version = store.Get("schema_version");
                if (version != SchemaVersion.ToString(System.Globalization.CultureInfo.InvariantCulture))
                    throw new InputException(path, version is null ? "not a KeyValueLab results store" : $"results store schema {version}; this kvlab reads schema {SchemaVersion}");
            }
            if (create && hasUnits && earlier.Contains("report") && store.Scalar("SELECT count(*) FROM units") == "0")
                throw new InputException(path, $"holds no units but {holds}; {StartOver}");
            if (!create) return store;
            store.Execute("""
                CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS units (
                  unit_id TEXT PRIMARY KEY, kind TEXT NOT NULL, group_id TEXT NOT NULL, seed INTEGER NOT NULL,
                  config TEXT NOT NULL, result TEXT NOT NULL, seconds REAL NOT NULL,
                  started_utc TEXT NOT NULL, finished_utc TEXT NOT NULL, host TEXT NOT NULL, versions TEXT NOT NULL, shard TEXT NOT NULL);
                """);
            string? schema = store.Get("schema_version");
            if (schema is null) store.Set("schema_version", SchemaVersion.ToString(System.Globalization.CultureInfo.InvariantCulture));
            else if (schema != SchemaVersion.ToString(System.Globalization.CultureInfo.InvariantCulture))
                throw new InputException(path, $"results store schema {schema}; this kvlab reads schema {SchemaVersion}");
            return store;
        }
        catch (SqliteException e)
        {
            db.Dispose();
            if (IsEnvironment(e)) throw new IOException($"{path}: {e.Message.TrimEnd('.')}", e);
            throw new InputException(path, $"not a readable results store ({e.Message}); {StartOver}");
        }
        catch
        {
            db.Dispose();
            throw;
        }
    }

    /// <summary>SQLite failures that come from the machine, not from the file: disk full, read-only, I/O error, cannot open, out of memory.</summary>
    public static bool IsEnvironment(SqliteException e) => e.SqliteErrorCode is 7 or 8 or 10 or 13 or 14;

    /// <summary>
    /// Moves everything a run folder holds (but its lock) into a new sibling <c>FOLDER.old-STAMP</c>, for <c>--fresh</c>.
    /// Nothing is deleted. Returns the folder the results went to, or null when there was nothing to move.
    /// </summary>
    public static string? SetAside(string runFolder)
    {
        var entries = Directory.EnumerateFileSystemEntries(runFolder).Where(e => !RunFolderLock.IsLockFile(System.IO.Path.GetFileName(e))).ToList();
        if (entries.Count == 0) return null;
        string full = System.IO.Path.GetFullPath(runFolder).TrimEnd(System.IO.Path.DirectorySeparatorChar);
        string aside = $"{full}.old-{DateTime.UtcNow:yyyyMMdd-HHmmss}";
        for (int n = 2; Directory.Exists(aside) || File.Exists(aside); n++) aside = $"{full}.old-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{n}";
        Directory.CreateDirectory(aside);
        foreach (string entry in entries)
        {
            string to = System.IO.Path.Combine(aside, System.IO.Path.GetFileName(entry));
            if (Directory.Exists(entry)) Directory.Move(entry, to);
            else File.Move(entry, to);
        }
        return aside;
    }

    /// <summary>A value of the study table, or null.</summary>
    public string? Get(string key)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT value FROM study WHERE key = $k";
        cmd.Parameters.AddWithValue("$k", key);
        return cmd.ExecuteScalar() as string;
    }

    public void Set(string key, string value)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "INSERT INTO study(key, value) VALUES($k, $v) ON CONFLICT(key) DO UPDATE SET value = excluded.value";
        cmd.Parameters.AddWithValue("$k", key);
        cmd.Parameters.AddWithValue("$v", value);
        Write(() => cmd.ExecuteNonQuery());
    }

    private T Write<T>(Func<T> write)
    {
        T result = default!;
        Write(() => { result = write(); });
        return result;
    }

    /// <summary>Runs a write; a failure of the machine (disk full, read-only, I/O) becomes an <see cref="IOException"/> naming the store.</summary>
    private void Write(Action write)
    {
        try { write(); }
        catch (SqliteException e) when (IsEnvironment(e))
        {
            throw new IOException($"{Path}: {e.Message.TrimEnd('.')}; nothing of the unit in progress was stored", e);
        }
    }

    /// <summary>
    /// Records the study on first use; afterwards checks that <paramref name="spec"/> (and the model fingerprint) are
    /// the ones the folder was started with, naming what differs.
    /// </summary>
    public void Bind(StudySpec spec, string modelFingerprint)
    {
        string? hash = Get("study_hash");
        if (hash is null)
        {
            Set("study_hash", spec.Hash());
            Set("study_json", spec.Canonical());
            Set("model_fingerprint", modelFingerprint);
            Set("created_utc", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture));
            return;
        }
        if (hash != spec.Hash())
        {
            var old = JsonSerializer.Deserialize<JsonElement>(Get("study_json") ?? "{}");
            var now = JsonSerializer.Deserialize<JsonElement>(spec.Canonical());
            var differing = old.EnumerateObject().Select(p => p.Name).Union(now.EnumerateObject().Select(p => p.Name))
                .Where(k => !(old.TryGetProperty(k, out var a) && now.TryGetProperty(k, out var b) && JsonElement.DeepEquals(a, b)));
            throw new InputException(Path, $"this run folder holds another study (differs in: {string.Join(", ", differing)}); use another --out folder");
        }
        string? fingerprint = Get("model_fingerprint");
        if (fingerprint != modelFingerprint)
            throw new InputException(Path, $"this run folder was started on a model with fingerprint {fingerprint}, not {modelFingerprint}; use another --out folder");
    }

    /// <summary>Ids of every stored unit.</summary>
    public HashSet<string> UnitIds()
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT unit_id FROM units";
        using var reader = cmd.ExecuteReader();
        while (reader.Read()) ids.Add(reader.GetString(0));
        return ids;
    }

    /// <summary>Stores finished units atomically (one transaction; a batch's cases land together or not at all).</summary>
    public void Add(IEnumerable<UnitRecord> records)
    {
        using var tx = Write(() => _db.BeginTransaction());
        foreach (var r in records)
        {
            using var cmd = _db.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = """
                INSERT INTO units(unit_id, kind, group_id, seed, config, result, seconds, started_utc, finished_utc, host, versions, shard)
                VALUES($id, $kind, $group, $seed, $config, $result, $seconds, $started, $finished, $host, $versions, $shard)
                """;
            cmd.Parameters.AddWithValue("$id", r.UnitId);
            cmd.Parameters.AddWithValue("$kind", r.Kind);
            cmd.Parameters.AddWithValue("$group", r.GroupId);
            cmd.Parameters.AddWithValue("$seed", r.Seed);
            cmd.Parameters.AddWithValue("$config", r.Config);
            cmd.Parameters.AddWithValue("$result", r.Result);
            cmd.Parameters.AddWithValue("$seconds", r.Seconds);
            cmd.Parameters.AddWithValue("$started", r.StartedUtc);
            cmd.Parameters.AddWithValue("$finished", r.FinishedUtc);
            cmd.Parameters.AddWithValue("$host", r.Host);
            cmd.Parameters.AddWithValue("$versions", r.Versions);
            cmd.Parameters.AddWithValue("$shard", r.Shard);
            try { Write(() => cmd.ExecuteNonQuery()); }
            catch (SqliteException e) when (e.SqliteErrorCode == 19)
            {
                throw new InvalidOperationException($"unit {r.UnitId} is already stored in {Path}; a unit must never run twice", e);
            }
        }
        Write(tx.Commit);
    }

    /// <summary>Every stored unit, ordered by unit id (so reports do not depend on the order units finished in).</summary>
    public List<UnitRecord> Units()
    {
        var list = new List<UnitRecord>();
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT unit_id, kind, group_id, seed, config, result, seconds, started_utc, finished_utc, host, versions, shard FROM units ORDER BY unit_id";
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
            list.Add(new UnitRecord(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetInt32(3), reader.GetString(4),
                reader.GetString(5), reader.GetDouble(6), reader.GetString(7), reader.GetString(8), reader.GetString(9), reader.GetString(10), reader.GetString(11)));
        return list;
    }

    /// <summary>
    /// Copies into this store the units of <paramref name="other"/> (another shard of the same study) that it lacks.
    /// Refuses a store of another study or model; a unit both hold must hold the same result. Returns units added.
    /// </summary>
    public int MergeFrom(ResultsStore other)
    {
        if (other.Get("study_hash") is not string theirs) throw new InputException(other.Path, "holds no study");
        string? mine = Get("study_hash");
        if (mine is null)
        {
            foreach (string key in new[] { "study_hash", "study_json", "model_fingerprint", "created_utc", "model", "model_type", "edit_data", "units_total" })
                if (other.Get(key) is string v) Set(key, v);
        }
        else if (mine != theirs) throw new InputException(other.Path, $"holds study {theirs}, not {mine}: shards of different studies cannot be merged");
        else if (Get("model_fingerprint") != other.Get("model_fingerprint")) throw new InputException(other.Path, "was run on a model with another fingerprint");
        var have = Units().ToDictionary(u => u.UnitId, StringComparer.Ordinal);
        var add = new List<UnitRecord>();
        foreach (var u in other.Units())
        {
            if (!have.TryGetValue(u.UnitId, out var existing)) add.Add(u);
            else if (existing.Result != u.Result) throw new InputException(other.Path, $"unit {u.UnitId} has a different result than in {Path}");
        }
        Add(add);
        return add.Count;
    }

    private string? Scalar(string sql)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToString(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    private HashSet<string> Tables()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT name FROM sqlite_master WHERE type = 'table'";
        using var reader = cmd.ExecuteReader();
        while (reader.Read()) names.Add(reader.GetString(0));
        return names;
    }

    private void Execute(string sql)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = sql;
        Write(() => cmd.ExecuteNonQuery());
    }

    public void Dispose() => _db.Dispose();
}
