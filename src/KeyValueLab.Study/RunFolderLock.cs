namespace KeyValueLab.Study;

/// <summary>The run folder is held by another kvlab process; the message names the folder and that process.</summary>
public sealed class FolderInUseException(string folder, string holder) : InputException(folder, $"in use by kvlab ({holder})")
{
    public override string Message => $"{FilePath} is in use by kvlab ({holder})";
}

/// <summary>
/// One writer per run folder: an OS lock (<see cref="FileShare.None"/>, which .NET takes as <c>flock(LOCK_EX)</c> on Unix and
/// a share-mode lock on Windows) on <c>kvlab.lock</c>, held until disposed. The kernel drops it when the process dies, so a
/// killed run leaves no stale lock. The holder's pid goes to <c>kvlab.pid</c> (the locked file cannot be read by others).
/// The lock file stays while the folder holds anything else (deleting it could let two processes lock two different files of
/// the same name); a folder this lock created and that still holds nothing but the lock is removed on release, so a run
/// that refused to start leaves no folder behind.
/// </summary>
public sealed class RunFolderLock : IDisposable
{
    public const string FileName = "kvlab.lock", PidFileName = "kvlab.pid";
    private readonly FileStream _stream;
    private readonly string _folder;
    private readonly bool _created;

    private RunFolderLock(FileStream stream, string folder, bool created) => (_stream, _folder, _created) = (stream, folder, created);

    /// <summary>Takes the lock of <paramref name="folder"/> (creating the folder), or throws <see cref="FolderInUseException"/>.</summary>
    public static RunFolderLock Acquire(string folder)
    {
        bool created = !Directory.Exists(folder);
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, FileName);
        FileStream stream;
        try { stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException e) when (IsLockConflict(e)) { throw new FolderInUseException(folder, Holder(folder)); }
        try
        {
            File.WriteAllText(Path.Combine(folder, PidFileName), Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n");
            return new RunFolderLock(stream, folder, created);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Whether a name in a run folder is one of the lock's own files.</summary>
    public static bool IsLockFile(string name) => name is FileName or PidFileName;

    // What .NET reports for a lock another process holds: on Windows ERROR_SHARING_VIOLATION (32) or ERROR_LOCK_VIOLATION (33)
    // in the HRESULT; on Unix flock's errno EWOULDBLOCK as the HRESULT (11 on Linux, 35 on macOS and the BSDs).
    private static bool IsLockConflict(IOException e) => OperatingSystem.IsWindows()
        ? (e.HResult & 0xFFFF) is 32 or 33
        : e.HResult == (OperatingSystem.IsLinux() ? 11 : 35);

    private static string Holder(string folder)
    {
        // The holder writes its pid just after it takes the lock: give it a moment.
        string pidFile = Path.Combine(folder, PidFileName);
        for (int attempt = 0; attempt < 20; attempt++)
        {
            try
            {
                if (int.TryParse(File.ReadAllText(pidFile).Trim(), out int pid)) return $"pid {pid}";
            }
            catch (IOException) { }
            Thread.Sleep(50);
        }
        return "pid unknown";
    }

    public void Dispose()
    {
        _stream.Dispose();
        if (_created && Directory.EnumerateFileSystemEntries(_folder).All(e => IsLockFile(Path.GetFileName(e))))
        {
            foreach (string name in new[] { PidFileName, FileName }) File.Delete(Path.Combine(_folder, name));
            Directory.Delete(_folder);
        }
    }
}
