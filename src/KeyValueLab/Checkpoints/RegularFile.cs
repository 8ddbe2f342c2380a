namespace KeyValueLab.Checkpoints;

/// <summary>
/// Refuses, before it is opened, an input that is not a regular file with content. Opening a FIFO for reading
/// blocks until a writer appears (forever, when none does), and a device never ends; .NET does not expose the
/// file type on Unix, but stat gives FIFOs, sockets and character devices (and /proc files) a size of 0, so a
/// length of 0 is refused with this one line, which also covers the empty regular file nothing can be read from.
/// </summary>
internal static class RegularFile
{
    /// <summary>The length of <paramref name="path"/>; throws <see cref="InputException"/> when it is missing, empty or not a regular file.</summary>
    public static long Require(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new InputException(path, "file not found");
        long length = info.Length;
        if (length == 0) throw new InputException(path, "is 0 bytes: empty, or not a regular file (a FIFO, socket or device?); give the file itself");
        return length;
    }
}
