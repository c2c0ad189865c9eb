package io.github.bigmodel.cli;

import io.github.bigmodel.core.NativeRuntime;
import java.io.PrintWriter;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * The {@code bigmodel} command line.
 *
 * <pre>
 * bigmodel inspect path/to/model-dir          # tensors, dtypes, shapes, shards, total size
 * bigmodel inspect model.safetensors --json
 * bigmodel convert chatglm3-6b chatglm3-6b-int4 --precision int4 --shard-size 2GB
 * bigmodel demo                               # writes, plans and reads a small checkpoint; no download
 * bigmodel serve --model chatglm3-6b          # OpenAI-compatible API and a chat page on 127.0.0.1:8000
 * </pre>
 *
 * <p>Errors are one line on stderr and a non-zero exit code (2 for a command line that does not parse, 1 for a
 * failure); {@code --verbose} adds the stack trace.
 */
@Command(name = "bigmodel", mixinStandardHelpOptions = true, versionProvider = BigModelCli.Version.class,
        description = "Run language models bigger than any one device.",
        subcommands = {PlanCommand.class, ChatCommand.class, ServeCommand.class, WorkerCommand.class, GenerateCommand.class, TokenizeCommand.class, InspectCommand.class,
                ConvertCommand.class, DemoCommand.class,
                MakeTinyCommand.class,
                CommandLine.HelpCommand.class})
public final class BigModelCli implements Runnable {

    @Option(names = "--verbose", description = "Print stack traces of errors.", scope = CommandLine.ScopeType.INHERIT)
    boolean verbose;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    /** Runs the command line and returns its exit code. */
    public static int execute(PrintWriter out, PrintWriter err, String... args) {
        NativeRuntime.init();
        CommandLine cl = new CommandLine(new BigModelCli());
        cl.setOut(out);
        cl.setErr(err);
        // Every subcommand answers --help / -h (and --version), before its required options are checked.
        for (CommandLine sub : cl.getSubcommands().values()) {
            if (!(sub.getCommand() instanceof CommandLine.HelpCommand)) {
                sub.getCommandSpec().mixinStandardHelpOptions(true);
            }
        }
        cl.setExecutionExceptionHandler((ex, line, parseResult) -> {
            BigModelCli root = line.getCommandSpec().root().userObject() instanceof BigModelCli
                    ? (BigModelCli) line.getCommandSpec().root().userObject() : null;
            if (root != null && root.verbose) {
                ex.printStackTrace(line.getErr());
            }
            line.getErr().println("error: " + oneLine(CliMessages.of(ex)));
            line.getErr().flush();
            return 1;
        });
        // A command line that does not parse: one line too, pointing at the help instead of printing all of it.
        cl.setParameterExceptionHandler((ex, arguments) -> {
            CommandLine failed = ex.getCommandLine();
            CommandLine.Model.CommandSpec spec = failed.getCommandSpec();
            String help = spec.parent() == null ? spec.name() + " --help"
                    : spec.root().name() + " " + spec.name() + " --help";
            failed.getErr().println("error: " + oneLine(ex) + " (see '" + help + "')");
            failed.getErr().flush();
            return failed.getCommandSpec().exitCodeOnInvalidInput();
        });
        int code = cl.execute(args);
        out.flush();
        err.flush();
        return code;
    }

    private static String oneLine(Throwable ex) {
        return oneLine(ex.getMessage() == null || ex.getMessage().isBlank() ? ex.getClass().getSimpleName()
                : ex.getMessage());
    }

    static String oneLine(String message) {
        int nl = message.indexOf('\n');
        return nl < 0 ? message : message.substring(0, nl);
    }

    public static void main(String[] args) {
        CliMessages.configureLogging(java.util.Arrays.asList(args).contains("--verbose"));
        PrintWriter out = new PrintWriter(System.out, true);
        PrintWriter err = new PrintWriter(System.err, true);
        System.exit(execute(out, err, args));
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = BigModelCli.class.getPackage().getImplementationVersion();
            return new String[] {"bigmodel " + (v == null ? "development build" : v)};
        }
    }
}
