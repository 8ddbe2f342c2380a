namespace KeyValueLab.Cli;

/// <summary>Process exit codes of <c>kvlab</c>.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>An unexpected failure inside kvlab (a bug): the message says what.</summary>
    public const int Internal = 1;
    /// <summary>Bad input: a file, a config, a dataset row or a command-line value.</summary>
    public const int BadInput = 2;
    /// <summary>Command-line usage error (unknown option, missing value).</summary>
    public const int Usage = 2;
    /// <summary>The native tensor runtime could not be loaded on this system.</summary>
    public const int Runtime = 3;
    public const int Interrupted = 130;
}

/// <summary>Runs a command body and turns failures into one line on stderr and an exit code.</summary>
internal static class CommandRunner
{
    public static int Run(TextWriter stderr, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (InputException e)
        {
            stderr.WriteLine($"kvlab: {e.Message}");
            return ExitCodes.BadInput;
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"kvlab: {e.Message}");
            return ExitCodes.Usage;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("kvlab: interrupted");
            return ExitCodes.Interrupted;
        }
        catch (Exception e) when (IsNativeLoadFailure(e))
        {
            // TorchSharp's native library failed to load (TorchSharp wraps it in its type initializer): say so, in the loader's words.
            string reason = Native.TorchRuntime.LoadFailureReason() ?? Innermost(e).Message.Split('\n')[0].Trim();
            stderr.WriteLine($"kvlab: the native tensor runtime could not be loaded: {reason}");
            return ExitCodes.Runtime;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            stderr.WriteLine($"kvlab: internal error: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
            if (Environment.GetEnvironmentVariable("KVLAB_DEBUG") == "1") stderr.WriteLine(e);
            return ExitCodes.Internal;
        }
    }

    private static bool IsNativeLoadFailure(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x is DllNotFoundException || x is TypeInitializationException { TypeName: { } type } && type.StartsWith("TorchSharp", StringComparison.Ordinal))
                return true;
        return false;
    }

    private static Exception Innermost(Exception e) => e.InnerException is null ? e : Innermost(e.InnerException);
}
