package io.github.bigmodel.core;

/**
 * Bad or missing input whose fix is one setting (an offload folder, a token budget). {@link #getMessage()} names
 * the setting as the Java API does; a command line words it with its flag through {@link #message}.
 *
 * <pre>{@code
 * try {
 *     BigModel.loadCheckpointAndDispatch(model, checkpoint, options);
 * } catch (SettingException e) {
 *     e.settingMessage().setting();     // "offload_folder"
 *     e.getMessage();                   // "... set DispatchOptions.offloadFolder. First: ..."
 * }
 * }</pre>
 */
public class SettingException extends IllegalArgumentException implements SettingMessage.Carrier {

    private static final long serialVersionUID = 1L;

    private final transient SettingMessage settingMessage;

    public SettingException(SettingMessage message) {
        super(message.toString());
        this.settingMessage = message;
    }

    @Override
    public SettingMessage settingMessage() {
        return settingMessage;
    }
}
